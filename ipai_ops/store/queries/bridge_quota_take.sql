-- A slice of a (sender, source) budget for one bridge worker (migration 0014,
-- ipai_ops/bridge/quota.py PostgresLedger).
SELECT granted, minute_left, hour_left, minute_full, hour_full, hour_id
  FROM ops.bridge_quota_take(
      %(sender)s, %(source)s, %(want)s, %(slice)s,
      %(per_minute)s, %(per_hour)s, %(unspent)s, %(unspent_hour)s
  )
