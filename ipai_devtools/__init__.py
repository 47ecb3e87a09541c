"""Tools for developing this repository, not shipped in the ipai-ops wheel: throwaway
PostgreSQL databases for tests and benchmarks (``scratch``), regenerating the ops schema's
``schema.sql`` from the migrations (``dump_schema``)."""
