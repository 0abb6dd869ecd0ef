-- What analysts query: exactly one row per event_id (SNS and Pub/Sub both redeliver, and streaming
-- insert ids are best effort), the first copy loaded.
SELECT * EXCEPT (copy_number)
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY loaded_at) AS copy_number
  FROM `${project}.ops.all_user_events`
)
WHERE copy_number = 1
