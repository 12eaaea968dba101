"""The database: the tables (`models`), engine and transaction setup (`db`), direct row writes
for the hot path (`rows`) and the Alembic migrations. Imports only `config` and `errors`; every
other package reads and writes through it.
"""
