"""A person's data and the database as a whole: a person's export (`export`) and erasure
(`erasure`), the retention of ended relations (`retention`), and backup and restore of SQLite
(`backup`). Calls `cases`, `workflows` and `store`.
"""
