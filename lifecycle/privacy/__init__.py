"""A person's data and the database as a whole: export, erasure and the retention of ended
relations (`people`), and backup and restore of SQLite (`backup`). Calls `cases`, `workflows`
and `store`.
"""
