"""User events (views, carts, purchases, ratings): validated, logged durably in Postgres, applied online at once.

contract.py   the request body of POST /v1/events and its validation (errors name the event index and field)
log.py        the event log table, the all-or-nothing insert and its online effect (recsys.history), one transaction
feast_push.py the Feast PushSource mirror of accepted events, pushed in the background after commit
export.py     the log as interactions, merged into a data set before retraining
"""
