from . import test_registry_sync
from . import test_console
from . import test_resolution
from . import test_security
from . import test_unclassified
from . import test_views
from . import test_otel
from . import test_runbook_sql
