"""Email after it is queued: rendering the templates (`emails`), composing MIME and iCalendar
(`mailer`, `calendar`), the delivery worker (`delivery`) and what it writes to the outbox rows
it claims (`claims`), the local SMTP sink (`sink`) and bulk mail — announcements and
subscribers (`bulk`). Reads rows and calls `cases`, `directory`, `workflows` and `store`; no
entry point imports upward into it except to start it.
"""
