"""The sample values generated lines draw from: texts in many scripts, places, devices, property
shapes, and the keys a line may lose."""

# Deliberate: look-alike letters from other scripts are test data here.
# ruff: noqa: RUF001

from __future__ import annotations

from typing import Any

# A good line always carries these keys with a non-null value; any other key may be absent or null.
ALWAYS_PRESENT = ("$insert_id", "uuid", "event_id", "event_time", "server_upload_time")

TEXTS = (
    "Привіт, світ",
    "你好，世界",
    "こんにちは 🌸",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "Γειά σου Κόσμε",
    "שלום עולם",
    "안녕하세요",
    "👩‍👩‍👧‍👦 family",
    "🇺🇦🇯🇵🏳️‍🌈",
    "café naïve façade — “quoted”",
    'tab\tand "quotes" and \\backslash',
    "two\nlines",
    "line\u2028separator",
    "zero\u200bwidth",
    "e\u0301 combining",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 astral",
    "",
    "plain ascii",
)

# (country, region, city, dma, lat, lng, language)
PLACES: tuple[tuple[str, str | None, str | None, str | None, float | None, float | None, str], ...] = (
    (
        "United States",
        "California",
        "San Francisco",
        "San Francisco-Oakland-San Jose, CA",
        37.7749,
        -122.4194,
        "English",
    ),
    ("United States", "New York", "New York", "New York, NY", 40.7128, -74.006, "English"),
    ("Ukraine", "Kyiv City", "Kyiv", None, 50.4501, 30.5234, "Ukrainian"),
    ("Japan", "Tokyo", "Tokyo", None, 35.6762, 139.6503, "Japanese"),
    ("Germany", "Bavaria", "München", None, 48.1351, 11.582, "German"),
    ("Brazil", "São Paulo", "São Paulo", None, -23.5505, -46.6333, "Portuguese"),
    ("Poland", "Łódź Voivodeship", "Łódź", None, 51.7592, 19.456, "Polish"),
    ("India", "Maharashtra", "Mumbai", None, 19.076, 72.8777, "Hindi"),
    ("Egypt", "Cairo Governorate", "Cairo", None, 30.0444, 31.2357, "Arabic"),
    ("South Korea", None, None, None, None, None, "Korean"),
    ("Netherlands", "North Holland", "Amsterdam", None, 52.3676, 4.9041, "Dutch"),
)

# (platform, os_name, os_versions, library, carriers, models)
# where each model is (brand, manufacturer, model, family, type)
DEVICES: tuple[tuple[Any, ...], ...] = (
    (
        "iOS",
        "ios",
        ("16.7.2", "17.1.2", "17.4"),
        "amplitude-ios/8.17.1",
        ("AT&T", "Vodafone", "NTT DOCOMO", "Київстар", None),
        (
            ("Apple", "Apple", "iPhone14,5", "Apple iPhone", "Apple iPhone 13"),
            ("Apple", "Apple", "iPhone15,2", "Apple iPhone", "Apple iPhone 14 Pro"),
        ),
    ),
    (
        "Android",
        "android",
        ("12", "13", "14"),
        "amplitude-android/2.40.1",
        ("T-Mobile", "Orange", "Jio", None),
        (
            ("samsung", "Samsung", "SM-S911B", "Samsung Galaxy S23", "Samsung Galaxy S23"),
            ("google", "Google", "Pixel 7", "Google Pixel", "Google Pixel 7"),
        ),
    ),
    (
        "Web",
        "Chrome",
        ("119", "120", "121"),
        "amplitude-ts/2.3.0",
        (None,),
        (
            (None, None, "Mac", "Mac", "Mac"),
            (None, None, "Windows", "Windows", "Windows"),
            (None, None, None, None, None),
        ),
    ),
    (None, None, (None,), "http/2.0", (None,), ((None, None, None, None, None),)),
)


SCREENS = ("home", "Главная", "設定", "checkout", "profile")
SOURCES = ("push", "deeplink", None)
CURRENCIES = ("USD", "EUR", "UAH", "JPY")
METHODS = ("card", "apple_pay", None)
RATIOS = (0.5, 1e-7, 12345.678, -3.0)
BIG_IDS = (9_007_199_254_740_993, 2**63 - 1)  # beyond float precision; INT64 max
TAG_SETS: tuple[list[str], ...] = ([], ["new"], ["sale", "β"], ["new", "sale", "β", "★"])

# Keys a good line may lack or carry as null: everything but ALWAYS_PRESENT.
DAMAGEABLE = (
    "user_id",
    "device_id",
    "session_id",
    "event_type",
    "amplitude_id",
    "app",
    "client_event_time",
    "client_upload_time",
    "server_received_time",
    "processed_time",
    "user_creation_time",
    "event_properties",
    "user_properties",
    "group_properties",
    "groups",
    "data",
    "country",
    "city",
    "region",
    "dma",
    "language",
    "platform",
    "os_name",
    "os_version",
    "device_brand",
    "device_manufacturer",
    "device_model",
    "device_family",
    "device_type",
    "device_carrier",
    "ip_address",
    "library",
    "location_lat",
    "location_lng",
    "paying",
    "sample_rate",
    "start_version",
    "version_name",
    "is_attribution_event",
    "amplitude_event_type",
    "adid",
    "idfa",
    "partner_id",
    "plan",
    "source_id",
    "data_type",
)

GROUPS: tuple[tuple[dict[str, Any] | None, dict[str, Any] | None], ...] = (
    ({}, {}),
    ({}, {}),
    ({"company": {"name": "Acme", "tier": {"level": 3, "since": "2021-01-01"}}}, {"company": ["Acme"]}),
    ({"team": {"名称": "開発チーム"}}, {"team": ["dev", "ops"]}),
    (None, None),
)
DATA: tuple[dict[str, Any] | None, ...] = (
    {},
    {"first_event": True},
    {"path": "/2/httpapi", "user_properties_updated": True, "group_first_event": {}, "group_ids": {}},
    {"path": "/batch", "lib": {"name": "amplitude-ts", "meta": {"retries": 1, "queue": [1, 2]}}},
    None,
)
PLANS: tuple[dict[str, Any] | None, ...] = (
    {},
    {"branch": "main", "source": "web", "version": "12"},
    {"branch": "feature/ü", "version": "3"},
    None,
)
NOT_OBJECTS = (b'["not", "an", "object"]', b'"just a string"', b"null", b"42")
