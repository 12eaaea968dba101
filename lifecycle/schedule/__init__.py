"""What runs by the clock: the job bodies (`jobs`: due timers, digests), their wiring into
APScheduler (`scheduler`), the intake rounds (`intake`) and the forecast of what is due
(`upcoming`). Reads rows and calls `cases`, `privacy` (the nightly retention), `workflows` and
`store`.
"""
