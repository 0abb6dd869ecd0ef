"""The lines of one hour: a fixed population of users, their events, and malformed lines.

Hot path: ~45 fields per event. ``int(rand() * n)`` and ``seq[int(rand() * len(seq))]`` stand in for
randrange/choice (several times faster, equally deterministic); timestamps are formatted by hand.
"""

# Deliberate: the random generators are seeded on purpose (reproducible data, not secrets).
# ruff: noqa: S311

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from jupiter_data.domain.amplitude import PROPERTY_TYPES
from jupiter_data.local.amplitude_data.plans import HourPlan
from jupiter_data.local.amplitude_data.samples import (
    BIG_IDS,
    CURRENCIES,
    DAMAGEABLE,
    DATA,
    DEVICES,
    GROUPS,
    METHODS,
    NOT_OBJECTS,
    PLACES,
    PLANS,
    RATIOS,
    SCREENS,
    SOURCES,
    TAG_SETS,
    TEXTS,
)

_US_PER_HOUR = 3_600_000_000
_US_PER_DAY = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Rand = Callable[[], float]


@lru_cache(maxsize=65536)
def _hour_text(epoch_hours: int) -> str:
    return (_EPOCH + timedelta(hours=epoch_hours)).strftime("%Y-%m-%d %H:")


def format_timestamp(epoch_us: int, fraction: bool = True) -> str:
    """Amplitude's timestamp text: ``2020-11-24 09:59:55.977000`` or, without fraction, ``…09:59:55``."""
    epoch_hours, rest = divmod(epoch_us, _US_PER_HOUR)
    seconds, micros = divmod(rest, 1_000_000)
    minutes, seconds = divmod(seconds, 60)
    if fraction:
        return f"{_hour_text(epoch_hours)}{minutes:02d}:{seconds:02d}.{micros:06d}"
    return f"{_hour_text(epoch_hours)}{minutes:02d}:{seconds:02d}"


def _epoch_us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _uuid(rng: random.Random) -> str:
    value = rng.getrandbits(128) & ~(0xF000 << 64) & ~(0xC000 << 48) | (0x4000 << 64) | (0x8000 << 48)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _below(rand: Rand, n: int) -> int:
    return int(rand() * n)


def _pick(rand: Rand, options: tuple[Any, ...]) -> Any:
    return options[int(rand() * len(options))]


@dataclass(frozen=True)
class _User:
    base: dict[str, Any]  # the per-user fields of a line, merged into every event
    user_properties: dict[str, Any]
    device_id: str
    creation_us: int


def _user_properties(rng: random.Random, index: int) -> dict[str, Any]:
    shape = rng.random()
    if shape < 0.1:
        return {}
    props: dict[str, Any] = {
        "plan": rng.choice(("free", "pro", "team", None)),
        "cohort": f"2020-W{rng.randint(1, 52):02d}",
        "[Amplitude] Device Family": rng.choice(("Apple iPhone", "Samsung Galaxy", "Mac")),
        "名前": rng.choice(TEXTS),
        "prefs": {
            "lang": rng.choice(("uk", "ja", "en", "ar")),
            "notifications": {
                "email": rng.random() < 0.5,
                "push": rng.random() < 0.5,
                "quiet_hours": [22, 7],
            },
        },
        "ltv": round(rng.uniform(0, 500), 2),
        "tags": rng.sample(("beta", "vip", "churn-risk", "β-tester", "🎮"), rng.randint(0, 3)),
    }
    if shape > 0.8:
        props["referral"] = {
            "code": f"REF{index:05d}",
            "by": {"user": f"user-{rng.randrange(10**6)}", "level": 2},
        }
    return props


@lru_cache(maxsize=8)
def _population(seed: int, app_id: int, size: int = 2000) -> tuple[_User, ...]:
    """A fixed set of users per (seed, app): the same in every hour and every window."""
    rng = random.Random(f"amplitude/{seed}/{app_id}/users")
    base_us = _epoch_us(datetime(2019, 1, 1, tzinfo=UTC))
    users = []
    for index in range(size):
        country, region, city, dma, lat, lng, language = rng.choice(PLACES)
        platform, os_name, os_versions, library, carriers, models = rng.choice(DEVICES)
        brand, manufacturer, model, family, device_type = rng.choice(models)
        ios, android = platform == "iOS", platform == "Android"
        anonymous = rng.random() < 0.1
        device_id = _uuid(rng).upper() if ios else _uuid(rng)
        base: dict[str, Any] = {
            "app": app_id,
            "amplitude_id": 100_000_000_000 + rng.randrange(10**10),
            "user_id": None
            if anonymous
            else rng.choice((f"user-{index:06d}", f"u{index}@example.com", str(index))),
            "device_id": device_id,
            "country": country,
            "region": region,
            "city": city,
            "dma": dma,
            "location_lat": lat,
            "location_lng": lng,
            "language": language,
            "platform": platform,
            "os_name": os_name,
            "os_version": rng.choice(os_versions),
            "device_brand": brand,
            "device_manufacturer": manufacturer,
            "device_model": model,
            "device_family": family,
            "device_type": device_type,
            "device_carrier": rng.choice(carriers),
            "ip_address": (
                f"203.0.113.{rng.randrange(1, 255)}"
                if rng.random() < 0.8
                else f"2001:db8::{rng.randrange(65536):x}"
            ),
            "library": library,
            "paying": rng.choice((True, False, None)),
            "sample_rate": None,
            "start_version": rng.choice(("1.0.0", "2.3.1", None)),
            "version_name": rng.choice(("3.4.0", "3.5.1", "4.0.0-beta.2", None)),
            "adid": _uuid(rng) if android and rng.random() < 0.7 else None,
            "idfa": _uuid(rng).upper() if ios and rng.random() < 0.4 else None,
            "partner_id": rng.choice((None, None, None, "partner-42")),
            "source_id": None,
            "is_attribution_event": False,
            "data_type": "event",
        }
        creation_us = base_us + rng.randrange(4 * 365 * _US_PER_DAY)
        users.append(_User(base, _user_properties(rng, index), device_id, creation_us))
    return tuple(users)


def _screen(rand: Rand) -> dict[str, Any]:
    return {
        "screen": _pick(rand, SCREENS),
        "referrer": {
            "source": _pick(rand, SOURCES),
            "campaign": {"id": _below(rand, 100), "name": _pick(rand, TEXTS)},
        },
        "duration_ms": 50 + _below(rand, 120_000),
    }


def _purchase(rand: Rand) -> dict[str, Any]:
    items: list[dict[str, Any]] = [
        {
            "sku": f"SKU-{_below(rand, 1000):03d}",
            "qty": 1 + _below(rand, 3),
            "price": _below(rand, 9900) / 100 + 0.5,
        }
        for _ in range(_below(rand, 4))
    ]
    return {
        "order_id": _below(rand, 10**9) if rand() < 0.9 else _pick(rand, BIG_IDS),
        "amount": round(sum(i["qty"] * i["price"] for i in items), 2),
        "currency": _pick(rand, CURRENCIES),
        "items": items,
        "payment": {"method": _pick(rand, METHODS), "card": {"brand": "visa", "3ds": rand() < 0.5}},
        "coupon": None,
    }


def _search(rand: Rand) -> dict[str, Any]:
    return {
        "query": _pick(rand, TEXTS),
        "results": _below(rand, 500),
        "filters": {"tags": _pick(rand, TAG_SETS), "price": {"min": 0, "max": None}},
        "ratio": _pick(rand, RATIOS),
    }


def _message(rand: Rand) -> dict[str, Any]:
    return {"text": _pick(rand, TEXTS), "length": _below(rand, 280), "attachments": [], "thread": {}}


def _empty(rand: Rand) -> dict[str, Any]:
    return {}


# (event_type, amplitude_event_type, event_properties builder), each listed as often as it is common
EVENT_TYPES: tuple[tuple[str, str | None, Callable[[Rand], dict[str, Any]]], ...] = (
    *[("app opened", None, _empty)] * 4,
    *[("screen viewed", None, _screen)] * 6,
    *[("payment succeeded", None, _purchase)] * 2,
    *[("search", None, _search)] * 3,
    *[("message sent ✉️", None, _message)] * 2,
    ("session_start", None, _empty),
    ("$identify", "$identify", _empty),
    ("[Amplitude] Revenue", None, _purchase),
)


class HourGenerator:
    """Lines of one hour: good events in upload order, with malformed lines interleaved.

    ``rng`` is the hour's own generator; ``seed`` and ``app_id`` choose the population of users.
    """

    def __init__(
        self, plan: HourPlan, rng: random.Random, *, seed: int, app_id: int, property_bags: bool
    ) -> None:
        self.plan = plan
        self.rng = rng
        self.rand = self.rng.random
        self.users = _population(seed, app_id)
        self.hour_us = _epoch_us(plan.hour)
        self.property_bags = property_bags
        self.day_start_us = self.hour_us - self.hour_us % _US_PER_DAY

    def lines(self) -> Iterator[bytes]:
        rand = self.rand
        events, malformed_left, late_left = self.plan.events, self.plan.malformed, self.plan.late
        total = events + malformed_left
        index = 0  # good events emitted so far
        dumps = orjson.dumps
        for line in range(total):
            # Selection sampling (Knuth's algorithm S): exact counts, no list of positions held.
            if malformed_left and rand() * (total - line) < malformed_left:
                malformed_left -= 1
                yield self._malformed(index)
                continue
            late = late_left > 0 and rand() * (events - index) < late_left
            late_left -= late
            yield dumps(self._event(index, late))
            index += 1

    def _event(self, index: int, late: bool) -> dict[str, Any]:
        rand = self.rand
        user = self.users[int(rand() * len(self.users))]
        # Stratified upload times: sorted, inside the hour, without holding a list of times.
        upload_us = self.hour_us + int((index + rand()) * _US_PER_HOUR) // self.plan.events
        if late:
            # Happened on the previous UTC day (an offline device, a queued batch), uploaded now.
            event_us = self.day_start_us - _US_PER_DAY + int(rand() * _US_PER_DAY)
        else:  # up to 10 minutes before upload, never before the upload day's midnight
            event_us = upload_us - int(rand() * min(600_000_000, upload_us - self.day_start_us))
        event_type, amplitude_event_type, properties = _pick(rand, EVENT_TYPES)
        group_properties, groups = _pick(rand, GROUPS)
        whole = 0.08  # share of timestamps written without a fraction
        event: dict[str, Any] = {
            "$insert_id": _uuid(self.rng) if rand() < 0.7 else f"{user.device_id}-{event_us // 1000}-{index}",
            "uuid": _uuid(self.rng),
            "event_id": 1 + int(rand() * 1_000_000),
            "session_id": -1 if rand() < 0.05 else (event_us - int(rand() * 1_800_000_000)) // 1000,
            "event_type": event_type,
            "amplitude_event_type": amplitude_event_type,
            "event_time": format_timestamp(event_us, rand() >= whole),
            "client_event_time": format_timestamp(event_us - int(rand() * 2_000_000), rand() >= whole),
            "client_upload_time": format_timestamp(
                upload_us - 1_000_000 - int(rand() * 2_000_000), rand() >= whole
            ),
            "server_received_time": format_timestamp(upload_us - int(rand() * 1_000_000), rand() >= whole),
            "server_upload_time": format_timestamp(upload_us, rand() >= whole),
            "processed_time": format_timestamp(
                upload_us + 1_000_000 + int(rand() * 89_000_000), rand() >= whole
            ),
            "user_creation_time": format_timestamp(user.creation_us, rand() >= whole),
            "event_properties": properties(rand) if rand() >= 0.03 else None,
            "user_properties": user.user_properties,
            "group_properties": group_properties,
            "groups": groups,
            "data": _pick(rand, DATA),
            "plan": _pick(rand, PLANS),
            **user.base,
        }
        if rand() < 0.25:  # a quarter of the lines lose one to three keys, or carry them as null
            for key in self.rng.sample(DAMAGEABLE, 1 + int(rand() * 3)):
                if key == "user_id" or rand() < 0.6:
                    event[key] = None
                else:
                    del event[key]
        if not self.property_bags:  # after every draw, so the rest of the line is the same
            event.update((key, None) for key in PROPERTY_TYPES if key in event)
        return event

    def _malformed(self, index: int) -> bytes:
        rand = self.rand
        kind = int(rand() * 7)
        if kind == 0:
            return b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        if kind == 1:
            return b"not json at all \xe2\x9c\x97"
        if kind == 2:  # cut off mid-object
            text = orjson.dumps(self._event(index, False))
            return text[: len(text) // 2]
        if kind == 3:  # invalid UTF-8 inside a string
            return (
                b'{"$insert_id": "\xff\xfe\xfd", "uuid": "'
                + _uuid(self.rng).encode()
                + b'", "event_type": "bad"}'
            )
        if kind == 4:
            return bytes(_pick(rand, NOT_OBJECTS))
        event = self._event(index, False)
        if kind == 5:  # no id at all
            del event["$insert_id"], event["uuid"]
        else:  # ids present but null
            event["$insert_id"] = event["uuid"] = None
        return orjson.dumps(event)
