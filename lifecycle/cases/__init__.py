"""The use cases every entry point calls: submit an application or a request, advance a case
(`services`), and read cases, the work queue and the outbox for people (`queries`). Knows no
HTTP, SMTP or templates; imports `workflows` and `store`, never an entry point.
"""
