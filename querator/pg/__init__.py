"""The postgres backend (SPEC 9): any number of Querator nodes on one PostgreSQL database. `backend.py`
opens it; `schema.py` owns every table; `partition.py` applies one partition's requests as one
transaction per step; `catalog.py` keeps the queues in step across nodes; `wakeups.py` carries
LISTEN/NOTIFY (or polling) between nodes. ADR 19 says why it is built this way."""
