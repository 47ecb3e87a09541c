"""docs/resolutions <-> Reliability > Resolutions: the import, its links, closing, and the round trip."""

import dataclasses
import shutil
import tempfile
from datetime import date
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from odoo.exceptions import AccessError
from odoo.tests import tagged, users

from ipai_ops import config, resolutions
from ipai_ops.resolutions import Resolution, dumps

from .common import ReliabilityCase

REPO_RECORDS = resolutions.record_files(config.repo_root() / "docs" / "resolutions")
#: The Odoo fields a resolution's markdown carries (the round trip must keep each one).
CARRIED = (
    "ref",
    "name",
    "code",
    "failure_mode_id",
    "stage",
    "outcome",
    "fingerprint",
    "other_fingerprints",
    "error_ids",
    "pr_url",
    "fixed_in_release",
    "regression_test",
    "date_done",
    "author",
    "user_id",
    "incident_start",
    "incident_end",
    "summary",
    "timeline",
    "root_cause",
    "fix",
    "evidence",
    "regression_notes",
    "follow_ups",
)

_line = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=30)
_headings = {f"## {name}" for name, _attr in resolutions.SECTIONS}
_body = (
    st.lists(_line, max_size=4)
    .map("\n".join)
    .filter(lambda body: not any(line.rstrip() in _headings for line in body.split("\n")))
)


def snapshot(rec):
    values = {}
    for name in CARRIED:
        value = rec[name]
        values[name] = value.ids if hasattr(value, "ids") else (value or False)
    return values


@tagged("post_install", "-at_install")
class TestResolutionSync(ReliabilityCase):
    def setUp(self):
        super().setUp()
        self.Resolution = self.env["ipai.resolution"]
        self.dir = Path(tempfile.mkdtemp(prefix="ipai_resolutions_"))
        self.addCleanup(shutil.rmtree, self.dir, True)

    def write_record(self, record, rel=None):
        path = self.dir / (rel or f"{record.id[:4]}/{record.id[5:7]}/{record.id}.md")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(record) if isinstance(record, Resolution) else record, encoding="utf-8")
        return path

    def record(self, **kw):
        base = {
            "id": "2026-03-01_WEBHOOK.SIGNATURE_INVALID_proxy",
            "code": "WEBHOOK.SIGNATURE_INVALID",
            "title": "t",
            "summary": "s",
            "root_cause": "r",
        }
        return Resolution(**{**base, **kw})

    # ------------------------------------------------------------------ the repository's records

    def test_install_imported_the_repository_records_byte_for_byte(self):
        self.assertTrue(REPO_RECORDS)
        for path in REPO_RECORDS:
            text = path.read_text(encoding="utf-8")
            record = resolutions.loads(text)
            rec = self.Resolution.search([("ref", "=", record.id)])
            self.assertEqual(len(rec), 1, f"{path} was not imported at install")
            self.assertEqual(rec.origin, "markdown")
            self.assertEqual(rec.source_path, str(path.relative_to(config.repo_root())))
            self.assertEqual(rec.failure_mode_id.code, record.code)
            # markdown -> Odoo -> markdown: the same bytes
            self.assertEqual(rec.to_markdown(), text)
            self.assertEqual(rec.export_filename(), rec.source_path)
        # A second sync of the same files writes nothing.
        result = self.Resolution.sync_from_markdown()
        self.assertEqual((result["created"], result["updated"]), ([], {}))
        self.assertEqual(result["unchanged"], len(REPO_RECORDS))
        self.assertEqual(result["problems"], [])

    def test_the_directory_follows_the_registry_path_setting(self):
        root = Path(tempfile.mkdtemp(prefix="ipai_checkout_"))
        self.addCleanup(shutil.rmtree, root, True)
        self.env["ir.config_parameter"].sudo().set_param(
            "ipai_reliability.registry_path", str(root / "ssot" / "errors" / "failure_modes.yaml")
        )
        self.assertEqual(self.Resolution.resolutions_dir(), root / "docs" / "resolutions")
        self.dir = root / "docs" / "resolutions"
        self.write_record(self.record(id="2026-03-02_WEBHOOK.SIGNATURE_INVALID_elsewhere"))
        result = self.Resolution.sync_from_markdown()
        rec = self.Resolution.browse(result["created"])
        self.assertEqual(rec.source_path, "docs/resolutions/2026/03/2026-03-02_WEBHOOK.SIGNATURE_INVALID_elsewhere.md")

    # ------------------------------------------------------------------ links and closing

    def test_links_to_code_and_error_groups_and_done_resolves_them_once(self):
        first, second = self.upsert(service_version="1.2.0"), self.upsert(service_version="1.2.0")
        record = self.record(
            stage="draft",
            fingerprints=(first["fingerprint"], second["fingerprint"], "fp1:not-seen-yet"),
            resolved_in_version="1.3.0",
            pr="https://github.com/o/r/pull/7",
        )
        self.write_record(record)
        result = self.Resolution.sync_from_markdown(self.dir)
        rec = self.Resolution.browse(result["created"])
        self.assertEqual(rec.failure_mode_id.code, "WEBHOOK.SIGNATURE_INVALID")
        self.assertEqual(rec.error_id, self.error(first))
        self.assertEqual(rec.error_ids, self.error(first) | self.error(second))
        self.assertIn(rec, self.error(first).resolution_ids)
        self.assertEqual(result["resolved"], [], "a draft closes nothing")
        self.assertEqual(self.error(first).status, "open")

        # The file moves to done: both groups are resolved in the release, like Mark done.
        self.write_record(dataclasses.replace(record, stage="done", date="2026-03-03"))
        result = self.Resolution.sync_from_markdown(self.dir)
        self.assertEqual(result["updated"], {rec.id: ["stage", "date"]})
        self.assertEqual(sorted(result["resolved"]), sorted([first["fingerprint"], second["fingerprint"]]))
        for res in (first, second):
            error = self.error(res)
            error.invalidate_recordset()
            self.assertEqual((error.status, error.resolved_in_version), ("resolved", "1.3.0"))

        # It regresses; the hourly sync must not resolve it again behind the owner's back.
        self.assertEqual(self.upsert(first["fingerprint"], service_version="1.3.1")["status"], "regressed")
        result = self.Resolution.sync_from_markdown(self.dir)
        self.assertEqual((result["unchanged"], result["resolved"]), (1, []))
        self.error(first).invalidate_recordset()
        self.assertEqual(self.error(first).status, "regressed")

        # A group added to a done record is closed when it is added.
        third = self.upsert()
        self.write_record(
            dataclasses.replace(
                record, stage="done", date="2026-03-03", fingerprints=(*record.fingerprints, third["fingerprint"])
            )
        )
        result = self.Resolution.sync_from_markdown(self.dir)
        self.assertEqual(result["resolved"], [third["fingerprint"]])
        self.assertEqual(self.error(first).status, "regressed")

    def test_an_error_seen_after_the_import_is_linked_by_the_next_sync(self):
        fingerprint = "fp1:later-" + "0" * 20
        self.write_record(self.record(fingerprints=(fingerprint,), stage="review"))
        rec = self.Resolution.browse(self.Resolution.sync_from_markdown(self.dir)["created"])
        self.assertFalse(rec.error_id)
        error = self.error(self.upsert(fingerprint))
        result = self.Resolution.sync_from_markdown(self.dir)
        self.assertEqual(result["unchanged"], 1)
        self.assertEqual(rec.error_id, error)

    def test_a_commit_sha_release_resolves_without_a_release_and_says_so(self):
        error = self.error(self.upsert())
        self.write_record(self.record(stage="done", fingerprints=(error.fingerprint,), resolved_in_version="3f2a9c1"))
        result = self.Resolution.sync_from_markdown(self.dir)
        self.assertEqual(result["resolved"], [error.fingerprint])
        self.assertEqual(len(result["problems"]), 1)
        self.assertIn("resolved_in_version 3f2a9c1 is not a release number", result["problems"][0])
        error.invalidate_recordset()
        self.assertEqual((error.status, error.resolved_in_version), ("resolved", False))

    def test_mark_done_in_odoo_resolves_every_listed_group(self):
        first, second = self.upsert(), self.upsert()
        rec = self.Resolution.create(
            {
                "name": "x",
                "code": "WEBHOOK.SIGNATURE_INVALID",
                "fingerprint": first["fingerprint"],
                "other_fingerprints": f"\n  {second['fingerprint']}  \n",
                "summary": "s",
                "root_cause": "r",
                "fix": "f",
                "pr_url": "https://github.com/o/r/pull/1",
            }
        )
        self.assertEqual(rec.other_fingerprints, second["fingerprint"])
        rec.action_done()
        for res in (first, second):
            self.error(res).invalidate_recordset()
            self.assertEqual(self.error(res).status, "resolved")

    # ------------------------------------------------------------------ bad files

    def test_bad_files_are_reported_one_by_one_and_the_rest_imported(self):
        good = self.record(id="2026-03-01_WEBHOOK.SIGNATURE_INVALID_good")
        self.write_record(good)
        self.write_record("# no front matter\n", "2026/03/no-front.md")
        self.write_record(dataclasses.replace(good, id="u", code="NOT.IN_THE_REGISTRY"), "2026/03/unknown.md")
        self.write_record(dataclasses.replace(good, id="twin"), "2026/03/twin-a.md")
        self.write_record(dataclasses.replace(good, id="twin", title="other"), "2026/03/twin-b.md")
        self.write_record(dataclasses.replace(good, id="big", summary="x" * (resolutions.MAX_FILE_BYTES + 1)), "big.md")
        self.write_record(dataclasses.replace(good, id="owner", owner="nobody-here"), "2026/03/owner.md")
        result = self.Resolution.sync_from_markdown(self.dir)
        created = self.Resolution.browse(result["created"])
        self.assertEqual(sorted(created.mapped("ref")), ["2026-03-01_WEBHOOK.SIGNATURE_INVALID_good", "owner"])
        problems = "\n".join(result["problems"])
        self.assertEqual(len(result["problems"]), 6, problems)
        for expected in (
            "2026/03/no-front.md: no front matter",
            "2026/03/unknown.md: unknown failure code NOT.IN_THE_REGISTRY",
            "2026/03/twin-a.md: duplicate id twin: also used by 2026/03/twin-b.md",
            "2026/03/twin-b.md: duplicate id twin: also used by 2026/03/twin-a.md",
            "big.md: ",
            "2026/03/owner.md: owner nobody-here is not an Odoo login; imported without an owner",
        ):
            self.assertIn(expected, problems)
        self.assertIn("-byte limit", problems)

    def test_a_record_odoo_refuses_is_reported_and_the_sync_goes_on(self):
        # Valid markdown that the model refuses: past draft without a root cause.
        self.write_record(self.record(id="ok-1", stage="review", root_cause=""), "ok-1.md")
        self.write_record(self.record(id="ok-2", incident_start="2026-01-01 10:00:00"), "ok-2.md")
        result = self.Resolution.sync_from_markdown(self.dir)
        self.assertEqual(self.Resolution.browse(result["created"]).mapped("ref"), ["ok-2"])
        self.assertEqual(result["problems"], ["ok-1.md: Resolution t needs a Summary and a Root cause before review."])

    # ------------------------------------------------------------------ button and cron

    @users("rel_manager")
    def test_the_button_syncs_for_managers(self):
        action = self.env["ipai.resolution"].action_sync_markdown()
        self.assertEqual(action["tag"], "display_notification")
        self.assertIn(f"{len(REPO_RECORDS)} unchanged", action["params"]["message"])

    @users("rel_user")
    def test_the_button_is_for_managers_only(self):
        with self.assertRaises(AccessError):
            self.env["ipai.resolution"].action_sync_markdown()

    def test_the_hourly_cron_runs_the_sync(self):
        cron = self.env.ref("ipai_reliability.ir_cron_ipai_reliability_sync_resolutions")
        self.assertEqual((cron.interval_number, cron.interval_type, cron.active), (1, "hours", True))
        rec = self.Resolution.search([("ref", "=", resolutions.loads(REPO_RECORDS[0].read_text()).id)])
        rec.summary = "changed in Odoo"
        self.assertEqual(cron.code, "model._cron_sync_markdown()")
        # The job's own server action, on this cursor (the scheduler would commit).
        cron.ir_actions_server_id.run()
        rec.invalidate_recordset()
        self.assertEqual(rec.to_markdown(), REPO_RECORDS[0].read_text(encoding="utf-8"))

    # ------------------------------------------------------------------ the round trip, as properties

    def in_rolled_back_savepoint(self, check):
        """One hypothesis example in a savepoint rolled back after it (examples share the test)."""
        savepoint = self.env.cr.savepoint()
        try:
            check()
        finally:
            savepoint.close(rollback=True)
            self.env.invalidate_all()
            shutil.rmtree(self.dir, True)

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def test_odoo_to_markdown_to_odoo_keeps_every_field(self, data):
        draw = data.draw

        def check():
            modes = self.Mode.search([("lifecycle", "=", "active")], limit=20)
            seen = [self.upsert()["fingerprint"], self.upsert()["fingerprint"]]
            fps = draw(st.lists(st.sampled_from([*seen, "fp1:x", "fp1:y"]), unique=True))
            vals = {
                "name": draw(_line.filter(str.strip)),
                "failure_mode_id": draw(st.sampled_from(modes.ids)),
                "stage": draw(st.sampled_from(["draft", "review", "done"])),
                "outcome": draw(st.sampled_from(["resolved", "mitigated"])),
                "fingerprint": fps[0] if fps else False,
                "other_fingerprints": "\n".join(fps[1:]) or False,
                "pr_url": draw(st.sampled_from([False, "https://github.com/o/r/pull/7"])),
                "fixed_in_release": draw(st.sampled_from([False, "1.10", "v2.0.0-rc.1", "3f2a9c1"])),
                "date_done": draw(st.sampled_from([False, date(2000, 1, 1), date(2026, 12, 31)])),
                "user_id": draw(st.sampled_from([False, self.rel_user.id, self.env.user.id])),
                "incident_start": draw(st.sampled_from([False, "2026-01-01 10:00:00"])),
                "incident_end": draw(st.sampled_from([False, "2026-01-01 12:30:05"])),
                **{name: draw(_line) or False for name in ("author", "regression_test")},
                **{
                    name: draw(_body) or False
                    for name in (
                        "summary",
                        "timeline",
                        "root_cause",
                        "fix",
                        "evidence",
                        "regression_notes",
                        "follow_ups",
                    )
                },
            }
            if vals["stage"] != "draft":
                vals["summary"] = vals["summary"] if (vals["summary"] or "").strip() else "what failed"
                vals["root_cause"] = vals["root_cause"] if (vals["root_cause"] or "").strip() else "why"
            rec = self.Resolution.create(vals)
            before = snapshot(rec)
            text = rec.to_markdown()
            self.write_record(text, f"round/{rec.ref}.md")
            rec.unlink()
            result = self.Resolution.sync_from_markdown(self.dir)
            self.assertEqual([p for p in result["problems"] if "not a release number" not in p], [])
            back = self.Resolution.browse(result["created"])
            self.assertEqual(snapshot(back), before)
            self.assertEqual(back.to_markdown(), text)

        self.in_rolled_back_savepoint(check)

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def test_markdown_to_odoo_to_markdown_is_byte_identical(self, data):
        """Every real record, with any of its fields redrawn, comes back as the same bytes."""
        draw = data.draw

        def check():
            path = draw(st.sampled_from(REPO_RECORDS))
            real = resolutions.loads(path.read_text(encoding="utf-8"))
            changes = {
                "title": draw(_line.filter(lambda s: s.strip() and not s.startswith(f"{real.code}: "))),
                "stage": draw(st.sampled_from(resolutions.STAGES)),
                "status": draw(st.sampled_from(resolutions.STATUSES)),
                "fingerprints": tuple(draw(st.lists(st.from_regex(r"\Afp1:[a-z0-9]{1,12}\Z"), unique=True))),
                "pr": draw(st.sampled_from(["", "https://github.com/o/r/pull/7"])),
                "resolved_in_version": draw(_line),
                "regression_test": draw(_line),
                "date": draw(st.sampled_from(["", "2026-02-28"])),
                "author": draw(_line),
                "owner": draw(st.sampled_from(["", "rel_user", self.env.user.login])),
                **{attr: draw(_body) for _name, attr in resolutions.SECTIONS},
            }
            chosen = draw(st.sets(st.sampled_from(sorted(changes))))
            record = dataclasses.replace(
                real, id=f"{real.id}-{draw(st.integers(0, 10**6))}", **{k: changes[k] for k in chosen}
            )
            if record.stage != "draft" and not (record.summary.strip() and record.root_cause.strip()):
                record = dataclasses.replace(record, summary=record.summary + "s", root_cause=record.root_cause + "r")
            file = self.write_record(record, f"prop/{record.id}.md")
            result = self.Resolution.sync_from_markdown(self.dir)
            self.assertEqual(result["problems"], [])
            rec = self.Resolution.browse(result["created"])
            self.assertEqual(rec.to_markdown(), file.read_text(encoding="utf-8"))

        self.in_rolled_back_savepoint(check)
