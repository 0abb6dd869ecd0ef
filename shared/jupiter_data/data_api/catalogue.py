"""The SQL catalogue: every query the data API runs, as fixed text with ``@name`` parameters.

Nothing a caller sends is ever part of SQL text: values travel only as BigQuery query parameters.
``tests/unit/test_data_api.py`` walks this module's syntax tree to prove ``CATALOGUE`` is built from
string literals alone, and the routes module's to prove only ``CATALOGUE`` entries reach the runner.
"""

from __future__ import annotations

# The values of the events relation's ``source`` column: one per side of its UNION ALL.
SOURCES = ("sns", "amplitude")

# Both sources as one relation. The SNS side reads the base table and keeps the first copy of each
# event_id itself rather than through the ops.user_events view: the view's window spans the whole
# table, so a date filter on it would not prune partitions. Copies of one event share its timestamp,
# so filtering first and deduplicating second gives the view's answer. Amplitude rows are partitioned
# by export day; an event is exported on or after the day it happened (a day of clock skew allowed).
_EVENTS_CTE = """
WITH sns_events AS (
  SELECT 'sns' AS source, event_id, user_id, event_type, event_timestamp AS event_time,
         context AS properties
  FROM `ops.all_user_events`
  WHERE @include_sns
    AND event_timestamp >= @start_time AND event_timestamp < @end_time
    AND (@user_id = '' OR user_id = @user_id)
    AND (ARRAY_LENGTH(@event_types) = 0 OR event_type IN UNNEST(@event_types))
  QUALIFY ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY loaded_at) = 1
),
amplitude_events AS (
  SELECT 'amplitude' AS source, COALESCE(insert_id, uuid) AS event_id, resolved_user_id AS user_id,
         event_type, event_time, TO_JSON_STRING(event_properties) AS properties
  FROM `amplitude.events`
  WHERE @include_amplitude
    AND export_day >= DATE_SUB(DATE(@start_time), INTERVAL 1 DAY)
    AND event_time >= @start_time AND event_time < @end_time
    AND (@user_id = '' OR resolved_user_id = @user_id)
    AND (ARRAY_LENGTH(@event_types) = 0 OR event_type IN UNNEST(@event_types))
  QUALIFY ROW_NUMBER() OVER (PARTITION BY insert_id, uuid ORDER BY export_day) = 1
),
events AS (
  SELECT * FROM sns_events
  UNION ALL
  SELECT * FROM amplitude_events
)
"""

_EVENT_COLUMNS = "SELECT source, event_id, user_id, event_type, event_time, properties FROM events\n"

CATALOGUE: dict[str, str] = {
    # Oldest first; the page starts strictly after the cursor's (event_time, source, event_id).
    "events": _EVENTS_CTE
    + _EVENT_COLUMNS
    + """WHERE NOT @has_cursor
   OR event_time > @after_time
   OR (event_time = @after_time AND (source > @after_source
       OR (source = @after_source AND event_id > @after_id)))
ORDER BY event_time, source, event_id
LIMIT @limit
""",
    # Newest first: the same key, the other way round.
    "user_events": _EVENTS_CTE
    + _EVENT_COLUMNS
    + """WHERE NOT @has_cursor
   OR event_time < @after_time
   OR (event_time = @after_time AND (source < @after_source
       OR (source = @after_source AND event_id < @after_id)))
ORDER BY event_time DESC, source DESC, event_id DESC
LIMIT @limit
""",
    "event_counts": _EVENTS_CTE
    + """SELECT DATE(event_time) AS day, source, event_type, COUNT(*) AS event_count
FROM events
GROUP BY day, source, event_type
ORDER BY day, source, event_type
""",
    # For each day: users active that day, in the 7 days and in the 30 days ending with it.
    "active_users": _EVENTS_CTE
    + """, activity AS (
  SELECT DISTINCT DATE(event_time) AS day, user_id FROM events
),
days AS (
  SELECT day FROM UNNEST(GENERATE_DATE_ARRAY(@first_day, @last_day)) AS day
)
SELECT days.day,
       COUNT(DISTINCT IF(activity.day = days.day, activity.user_id, NULL)) AS daily_active_users,
       COUNT(DISTINCT IF(activity.day > DATE_SUB(days.day, INTERVAL 7 DAY), activity.user_id, NULL))
         AS weekly_active_users,
       COUNT(DISTINCT activity.user_id) AS monthly_active_users
FROM days
LEFT JOIN activity
  ON activity.day > DATE_SUB(days.day, INTERVAL 30 DAY) AND activity.day <= days.day
GROUP BY days.day
ORDER BY days.day
""",
    # The replaced function's contract: Amplitude events per type over inclusive dates.
    "legacy_event_counts": _EVENTS_CTE
    + """SELECT event_type, COUNT(*) AS event_count
FROM events
GROUP BY event_type
ORDER BY event_type
""",
}
