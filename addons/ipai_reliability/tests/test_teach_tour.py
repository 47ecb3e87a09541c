"""The teach loop in a real browser (static/tests/tours/teach_tour.js): a manager opens an
unclassified error and sets its failure code; the test then checks the database: the taught
example in ops.classification_examples (text, code, who, the code it replaced), the error and
the unclassified error of the same shape recoded, one of another shape left alone, and that
a model trained with the example (as `ipai-ops classify train --taught` trains it) gives the
next similar error the code where the signatures alone cannot. Needs Chromium (skipped by
Odoo's test runner when it is not installed)."""

from odoo.tests import HttpCase, tagged

from ipai_ops.classify import classify
from ipai_ops.classify.model import Example, Model, model_text, registry_examples, train

from .common import ReliabilityCase

# the same values as in teach_tour.js
TAUGHT_CODE = "INTENT.STATE_CONFLICT"
FALLBACK_CODE = "UNCLASSIFIED.UNKNOWN"
ERROR_TYPE = "SpoolError"
TEACH_MESSAGE = "Spool 1 tipped over on shard kappa after 1 passes"
# the same shape (numbers aside): it follows at once
SIBLING_MESSAGE = "Spool 7 tipped over on shard kappa after 7 passes"
# another shape: left for a person
OTHER_MESSAGE = "Spool 4 is fine but slow"
# a later error of that kind, worded a little differently: the model trained with the example answers it
NEXT_MESSAGE = "Spool 12 tipped over on shard kappa after 3 passes, retrying"


@tagged("post_install", "-at_install")
class TestTeachTour(ReliabilityCase, HttpCase):
    def _unclassified(self, message):
        return self.error(self.upsert(code=FALLBACK_CODE, message=message, error_type=ERROR_TYPE))

    def test_set_the_failure_code_of_an_unclassified_error_and_the_next_one_is_classified(self):
        error = self._unclassified(TEACH_MESSAGE)
        sibling = self._unclassified(SIBLING_MESSAGE)
        other = self._unclassified(OTHER_MESSAGE)
        registry = self.env["ipai.ops"].registry()
        # no signature reads this kind of error: without a person it stays unclassified
        self.assertTrue(classify(registry, message=NEXT_MESSAGE, error_type=ERROR_TYPE, model=None).is_fallback)

        self.start_tour("/odoo", "ipai_reliability_teach_tour", login="admin", timeout=180)

        self.env.invalidate_all()
        self.assertEqual((error.code, error.unclassified), (TAUGHT_CODE, False))
        self.assertEqual(sibling.code, TAUGHT_CODE)
        self.assertEqual(other.code, FALLBACK_CODE)
        self.env.cr.execute(
            "SELECT id, code, error_type, text, error_id, previous_code, taught_by"
            " FROM ops.classification_examples ORDER BY id"
        )
        rows = self.env.cr.fetchall()
        self.assertEqual(
            [row[1:] for row in rows], [(TAUGHT_CODE, ERROR_TYPE, TEACH_MESSAGE, error.id, FALLBACK_CODE, "admin")]
        )
        # the next training learns it: the taught row as `classify train --taught` reads it
        example_id, code, error_type, text = rows[0][:4]
        taught = [Example(model_text(message=f"{error_type}: {text}"), code, f"taught:{example_id}")]
        model = Model.from_bytes(train(registry_examples(registry), taught=taught))
        result = classify(registry, message=NEXT_MESSAGE, error_type=ERROR_TYPE, model=model)
        self.assertEqual((result.code, result.matched_by), (TAUGHT_CODE, "model"))
        self.assertEqual(result.model["nearest"]["source"], f"taught:{example_id}")
