#!/usr/bin/env python3
"""Write each addon's translation template (addons/<addon>/i18n/<addon>.pot) with Odoo's own
exporter (``odoo-bin i18n export``), from a throwaway database with both addons installed.

    .venv/bin/python scripts/export_pot.py

Run it after changing a translatable string (``self.env._(...)``, field labels, views);
translators start from the .pot (``msginit`` or Odoo's import). Needs Odoo 19 and PostgreSQL
as ``scripts/odoo_layer.py`` finds them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import odoo_layer


def main() -> int:
    odoo_src = odoo_layer.locate_odoo()
    if odoo_src is None:
        print("export_pot: Odoo 19 not found (ODOO_SRC, import odoo, /opt/odoo)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="ipai_pot_"))
    db = f"ipai_pot_{uuid.uuid4().hex[:10]}"
    config = odoo_layer.write_config(odoo_src, work / "odoo.conf", data_dir=work / "data")
    try:
        addons = odoo_layer.OUR_ADDONS
        odoo_layer.install(odoo_src, config, db, demo=False)
        for addon in odoo_layer.OUR_ADDONS:
            (odoo_layer.ADDONS / addon / "i18n").mkdir(exist_ok=True)
        # Without -o, Odoo writes <addon>/i18n/<addon>.pot into each module's own folder.
        subprocess.run(
            # The command comes first (odoo-bin <command> [options]), unlike odoo_layer.odoo_bin.
            [sys.executable, str(odoo_src / "odoo-bin"), "i18n", "export", "-c", str(config), "-d", db, *addons],
            check=True,
        )
    except subprocess.CalledProcessError as exc:
        print(f"export_pot: {Path(exc.cmd[1]).name} exited with {exc.returncode}", file=sys.stderr)
        return exc.returncode or 1
    finally:
        odoo_layer.drop_database(db)
        shutil.rmtree(work, ignore_errors=True)
    for addon in odoo_layer.OUR_ADDONS:
        print(odoo_layer.ADDONS / addon / "i18n" / f"{addon}.pot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
