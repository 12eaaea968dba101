"""The public mentor directory: who is listed, their free places, search with filters and
paging, and the mentors suggested for a request (`search`). Reads `workflows` (qualification
and capacity rules) and `store`; writes nothing.
"""
