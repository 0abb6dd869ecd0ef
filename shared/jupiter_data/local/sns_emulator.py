"""moto's SNS in server mode, also answering the unsigned calls real SNS hosts answer. Dev only.

An SNS subscriber makes two calls to the SNS host named in a message: it downloads the signing
certificate (``/SimpleNotificationService-<id>.pem``) and, for a SubscriptionConfirmation, GETs the
``SubscribeURL`` (``/?Action=ConfirmSubscription&…``). moto serves both, but its server routes an
unsigned request by the AWS host it was sent to; the local bridge sends them to 127.0.0.1 (its
``SNS_CERT_BASE_URL``), so those two shapes of request are pinned to the SNS backend here.

    python -m jupiter_data.local.sns_emulator -H 127.0.0.1 -p 5005
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

_PEM_PATH = re.compile(r"/SimpleNotificationService-[^/]+\.pem")


class _SnsHostDispatcher(DomainDispatcherApplication):
    def get_application(self, environ: dict[str, Any]) -> Any:
        unsigned = "HTTP_AUTHORIZATION" not in environ
        confirm = "Action=ConfirmSubscription" in environ.get("QUERY_STRING", "")
        if unsigned and (_PEM_PATH.fullmatch(environ.get("PATH_INFO", "")) or confirm):
            with self.lock:
                if "sns" not in self.app_instances:
                    self.app_instances["sns"] = self.create_app("sns")
                return self.app_instances["sns"]
        return super().get_application(environ)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5005)
    args = parser.parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: sys.exit(0))
    app = _SnsHostDispatcher(create_backend_app)
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
