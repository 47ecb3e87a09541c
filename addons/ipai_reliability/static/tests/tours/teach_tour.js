/**
 * Tour run by tests/test_teach_tour.py (issue 14, "Classification that learns"): a manager sets
 * the failure code of an unclassified error in the browser; the test then checks the taught
 * example in ops.classification_examples, the error of the same shape that followed, and that a
 * model trained with the example gives the next similar error the code. Not meant to be started
 * from the UI on other data.
 */
import { registry } from "@web/core/registry";
import { stepUtils } from "@web_tour/tour_utils";
import { dialog, dialogClosed, openMenu } from "@ipai_reliability/../tests/tours/reliability_tours";

// the code and the text the Python test writes and then checks in the database
const TAUGHT_CODE = "INTENT.STATE_CONFLICT";
const FALLBACK_CODE = "UNCLASSIFIED.UNKNOWN";
const TEACH_MESSAGE = "Spool 1 tipped over on shard kappa after 1 passes";

registry.category("web_tour.tours").add("ipai_reliability_teach_tour", {
    url: "/odoo",
    steps: () => [
        ...openMenu("menu_ipai_reliability_errors", "menu_ipai_reliability_unclassified", "Open the unclassified errors"),
        {
            content: "Open the unclassified error",
            trigger: `.o_list_view .o_data_row td:contains('${TEACH_MESSAGE}')`,
            run: "click",
        },
        ...stepUtils.statusbarButtonsSteps(
            "Set failure code",
            "Set the failure code it should have",
            `.o_form_view .oe_title [name='code']:contains('${FALLBACK_CODE}')`
        ),
        {
            content: "The dialog shows the code it has now",
            trigger: `${dialog} .o_field_widget[name='current_code']:contains('${FALLBACK_CODE}')`,
        },
        {
            content: "Look the code up",
            trigger: `${dialog} .o_field_widget[name='failure_mode_id'] input`,
            run: `edit ${TAUGHT_CODE}`,
        },
        {
            content: "Choose it in the list",
            trigger: `.o-autocomplete--dropdown-item a:contains('${TAUGHT_CODE}')`,
            run: "click",
        },
        {
            content: "The code is picked",
            trigger: `${dialog} .o_field_widget[name='failure_mode_id'] input:value('${TAUGHT_CODE}')`,
        },
        {
            content: "Set and teach",
            trigger: `${dialog} footer button[name='action_apply']`,
            run: "click",
        },
        dialogClosed(),
        {
            content: "A notification says the error of the same shape followed",
            trigger: ".o_notification:contains('1 unclassified error(s) of the same shape too')",
        },
        {
            content: "The error's form shows the taught code",
            trigger: `.o_form_view .oe_title [name='code']:contains('${TAUGHT_CODE}')`,
        },
    ],
});
