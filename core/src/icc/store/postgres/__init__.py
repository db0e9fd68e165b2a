"""The shared PostgreSQL backend: the connection (``connection``), the state store (``state``), the queue
transport (``queues``), the idle tick through libpq (``idle``) and the SQL ``migrations``. Nothing is
re-exported: psycopg is imported only by what needs it."""
