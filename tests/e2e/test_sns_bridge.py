"""moto SNS → sns_to_pubsub (under functions-framework) → Pub/Sub emulator, as deployed."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from jupiter_data.local.stack import SNS_TOPIC_ARN, LocalStack
from jupiter_data.local.tap import TopicTap


def test_every_message_published_to_sns_arrives_in_pubsub_exactly_as_sent(platform: LocalStack) -> None:
    sns = platform.sns_client()
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=SNS_TOPIC_ARN)["Subscriptions"]
    assert [s["Endpoint"] for s in subscriptions] == [platform.function_urls()["sns_to_pubsub"]]

    sent: dict[str, str] = {}
    with TopicTap(platform.settings(), "sns-events") as tap:
        for n in range(1000):
            message = json.dumps(
                {"userId": f"user-{n}", "eventType": "login", "timestamp": 1_700_000_000_000 + n}
            )
            sent[sns.publish(TopicArn=SNS_TOPIC_ARN, Message=message)["MessageId"]] = message
        received = tap.collect(len(sent), timeout=60)

    by_id = {m.attributes["sns_message_id"]: m for m in received}
    assert len(received) == len(by_id) == 1000, "each message exactly once"
    assert {sns_id: m.data.decode() for sns_id, m in by_id.items()} == sent
    assert {m.attributes["sns_topic_arn"] for m in received} == {SNS_TOPIC_ARN}
    assert all(m.attributes["sns_timestamp"].endswith("Z") for m in received)


def sns_outcome(platform: LocalStack, message_id: str, endpoint: str, timeout: float = 20) -> str:
    """Wait for the SNS emulator's final outcome of one delivery (a JSON line in its log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in platform.supervisor.log_path("sns").read_text().splitlines():
            if line.startswith("{"):
                outcome = json.loads(line)
                if (outcome["message_id"], outcome["endpoint"]) == (message_id, endpoint):
                    return str(outcome["outcome"])
        time.sleep(0.05)
    raise AssertionError(f"SNS did not finish delivering {message_id} to {endpoint} in {timeout} s")


def capture_one_genuine_sns_post(platform: LocalStack, **publish_args: str) -> dict[str, str]:
    """Subscribe a capturing endpoint beside the bridge and return what moto POSTs to it.

    SNS delivers after Publish returns: wait until the capture has it and the bridge has had its own
    copy, so that copy cannot land in a tap opened afterwards.
    """
    captured: list[dict[str, str]] = []
    arrived = threading.Event()

    class Capture(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            captured.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            arrived.set()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sns = platform.sns_client()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/"
    arn = sns.subscribe(TopicArn=SNS_TOPIC_ARN, Protocol="http", Endpoint=endpoint)["SubscriptionArn"]
    try:
        message_id = sns.publish(TopicArn=SNS_TOPIC_ARN, Message='{"userId": "genuine"}', **publish_args)[
            "MessageId"
        ]
        assert arrived.wait(20), "SNS did not deliver to the capturing endpoint"
        sns_outcome(platform, message_id, platform.function_urls()["sns_to_pubsub"])
    finally:
        sns.unsubscribe(SubscriptionArn=arn)
        server.shutdown()
        server.server_close()
    (genuine,) = captured
    return genuine


def test_the_deployed_endpoint_refuses_tampering_forgeries_and_other_methods(platform: LocalStack) -> None:
    url = platform.function_urls()["sns_to_pubsub"]
    genuine = capture_one_genuine_sns_post(platform)
    tampered = {**genuine, "Message": '{"userId": "attacker"}'}
    with TopicTap(platform.settings(), "sns-events") as tap:
        replay = requests.post(
            url, data=json.dumps(genuine), headers={"Content-Type": "text/plain"}, timeout=10
        )
        forged = requests.post(
            url, data=json.dumps(tampered), headers={"Content-Type": "text/plain"}, timeout=10
        )
        (delivered,) = tap.collect(2, timeout=3)
    assert replay.status_code == 200, (
        "a genuine message delivered again is accepted (deduplicated downstream)"
    )
    assert (forged.status_code, forged.json()["error"]) == (403, "invalid_signature")
    assert delivered.data == b'{"userId": "genuine"}'

    assert requests.get(url, timeout=10).status_code == 405
    raw = requests.post(url, data=b"{}", headers={"x-amz-sns-rawdelivery": "true"}, timeout=10)
    assert raw.status_code == 400
    assert "RawMessageDelivery" in raw.json()["detail"]

    # The certificate must come from the SNS host of the topic's region (the local SNS signs as AWS).
    assert genuine["SigningCertURL"].startswith("https://sns.us-east-1.amazonaws.com/")
    moved = {**genuine, "SigningCertURL": genuine["SigningCertURL"].replace("us-east-1", "eu-west-1")}
    other_region = requests.post(url, data=json.dumps(moved), timeout=10)
    assert (other_region.status_code, other_region.json()["error"]) == (400, "untrusted_url")
    # Hostile bodies are short 400s from the server as deployed, not 500s.
    nested = requests.post(url, data=b"[" * 200_000, timeout=10)
    assert (nested.status_code, nested.json()["error"]) == (400, "invalid_json")
    surrogate = requests.post(url, data=json.dumps({**genuine, "Message": "\ud800"}), timeout=10)
    assert (surrogate.status_code, surrogate.json()["error"]) == (400, "invalid_envelope")


def test_a_subject_is_signed_as_aws_signs_it_and_cannot_be_altered(platform: LocalStack) -> None:
    """AWS signs Subject when present (moto's own signer leaves it out; the local SNS signs as AWS)."""
    with_subject = capture_one_genuine_sns_post(platform, Subject="Deposit")
    assert with_subject["Subject"] == "Deposit"
    url = platform.function_urls()["sns_to_pubsub"]
    genuine = requests.post(url, data=json.dumps(with_subject), timeout=10)
    altered = requests.post(url, data=json.dumps({**with_subject, "Subject": "Withdrawal"}), timeout=10)
    assert genuine.status_code == 200
    assert (altered.status_code, altered.json()["error"]) == (403, "invalid_signature")
