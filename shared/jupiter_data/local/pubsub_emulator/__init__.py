"""A small, real Pub/Sub emulator speaking the ``google.pubsub.v1`` gRPC API.

The official client (``google-cloud-pubsub``) talks to it unchanged: set
``PUBSUB_EMULATOR_HOST=127.0.0.1:8085`` before constructing a client. Because clients only see
that variable, the official emulator (``gcloud beta emulators pubsub start``) is a drop-in
replacement wherever it is installed.

Supported:

* Publisher: CreateTopic, GetTopic, UpdateTopic, ListTopics, ListTopicSubscriptions, DeleteTopic,
  Publish (message ids and publish_time assigned). Deleting a topic leaves its subscriptions
  attached to ``_deleted-topic_``, as the real service does.
* Subscriber: CreateSubscription, GetSubscription, UpdateSubscription, ListSubscriptions,
  DeleteSubscription, ModifyPushConfig, Pull, StreamingPull (with client flow control),
  Acknowledge, ModifyAckDeadline (0 = nack, redelivered at once unless a retry policy delays it).
* Ack deadlines and redelivery; a subscription only sees messages published after it exists;
  ``delivery_attempt`` counted per message and subscription, reported when a dead-letter policy
  is set.
* Dead-letter policies. Unlike the real API (5..100), ``max_delivery_attempts`` may be any value
  from 1 to 100 so tests stay quick; 0 means the real default, 5. Ack deadlines may be 1..600 s
  (the real minimum is 10 s) for the same reason.
* Push subscriptions: each message is POSTed as the standard push envelope (which
  functions-framework turns into a ``google.cloud.pubsub.topic.v1.messagePublished`` CloudEvent)
  by a pool of ``push_workers`` threads per subscription. 102/200/201/202/204 acks; anything else,
  a connection error or a timeout (the ack deadline, as in Pub/Sub: a 9-minute sync is not
  redelivered while it runs) nacks. Nacked messages are
  retried with exponential backoff: the subscription's retry_policy when set, otherwise
  0.1 s doubling to 10 s, with +-10 % jitter. No authentication header is sent.

Not supported (the RPC or field is refused with UNIMPLEMENTED rather than silently ignored):
snapshots, Seek, DetachSubscription, ListTopicSnapshots, IAM, filters, BigQuery/Cloud Storage/
Bigtable subscriptions and unwrapped push. Message ordering and exactly-once delivery are
stored but not enforced, and retention is unlimited (nothing expires).

State lives in memory; with ``--data-dir DIR`` (``data_dir=``) it also survives a graceful restart,
as real Pub/Sub is durable (see :mod:`.persistence`).

Where things are: :mod:`.broker` (the state under one lock), :mod:`.admin` (topic and subscription
RPCs), :mod:`.messages` (publish, pull, acknowledge), :mod:`.leases` (ack deadlines, redelivery,
dead-lettering), :mod:`.push` (push delivery), :mod:`.persistence` (save and load), :mod:`.server`
(the gRPC server and its lifecycle). Run in the foreground with
``python -m jupiter_data.local.pubsub_emulator --port 8085 [--data-dir DIR]``.
"""

from jupiter_data.local.pubsub_emulator.server import PubSubEmulator

__all__ = ["PubSubEmulator"]
