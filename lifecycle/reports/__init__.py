"""Reports for the association: the tables computed in SQL (`tables` names them; `mentors` and
`relations` compute them from the building blocks in `queries`), the small-group rule that
hides what could identify a person (`disclosure`) and the charts drawn from the tables
(`charts`). Reads `workflows` and `store`; never a confidential text.
"""
