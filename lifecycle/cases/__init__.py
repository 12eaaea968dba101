"""The use cases every entry point calls: submit an application or a request, advance a case
(`services`, reading their input through `fields`), hold a public submission until the owner
of its address confirms it (`pending`), and read cases, the work queue and the outbox for
people (`queries`); staff
logins (`accounts`) and their personal API tokens (`tokens`). Knows no HTTP, SMTP or templates;
imports `workflows` and `store`, never an entry point.
"""
