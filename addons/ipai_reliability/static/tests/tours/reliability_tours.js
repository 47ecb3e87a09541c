/**
 * Tours run by tests/test_triage_tour.py and tests/test_proof_tours.py (issue 17, "Proof in a
 * real browser") on the rows those tests write through ipai_ops' store; they are not meant to
 * be started from the UI on other data.
 */
import { registry } from "@web/core/registry";
import { stepUtils } from "@web_tour/tour_utils";

// the codes, names and texts the Python test writes and then checks in the database
const TOP_CODE = "APP.TOUR_TRIAGE_TOP";
const ASSIGNEE = "Tour Assignee";
const COMMENT = "Looking at it: the proxy re-encodes the webhook body";
const RELEASE = "2.3.5";
const CURRENT_RELEASE = "2.3.4";
const PROPOSED_CODE = "BILLING_API.QUOTA_EXCEEDED_TENANT_AFTER";
const MODE_NAME = "Tenant quota exceeded";

const RESOLUTION_CODE = "APP.TOUR_PROOF_RESOLUTION";
const RESOLUTION_TITLE = "The proxy re-encodes the webhook body";
const SUMMARY = "Webhook signatures failed for every event behind the new proxy for 40 minutes";
const ROOT_CAUSE = "The proxy re-encoded the JSON body before the signature was checked";
const RULE_NAME = "Proof tour: new errors by email";
const RECIPIENT = "Proof On Call";

const resolutionForm = ".o_form_view:has(.o_field_widget[name='root_cause'])";

export const dialog = ".modal:not(.o_inactive_modal)";
const modeForm = ".o_form_view:has(.o_field_widget[name='lifecycle'])";

/** A :value() argument that matches ``text`` exactly (plain :value() matches a substring). */
const exactly = (text) => `/^${text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$/`;

/** Steps that wait until no dialog is open (the last one's action has run). */
export function dialogClosed() {
    return { content: "the dialog closed", trigger: `body:not(:has(${dialog}))` };
}

/** Home -> Reliability -> a menu section -> one of its items. */
export function openMenu(section, item, content) {
    return [
        ...stepUtils.goToAppSteps("ipai_reliability.menu_ipai_reliability_root", "Open Reliability"),
        { content: "Open the menu section", trigger: `button[data-menu-xmlid="ipai_reliability.${section}"]`, run: "click" },
        { content, trigger: `a[data-menu-xmlid="ipai_reliability.${item}"]`, run: "click" },
    ];
}

function statusIs(label) {
    return {
        content: `the status is ${label}`,
        trigger: `.o_statusbar_status button.o_arrow_button_current:contains('${label}')`,
    };
}

registry.category("web_tour.tours").add("ipai_reliability_triage_tour", {
    url: "/odoo",
    steps: () => [
        ...openMenu("menu_ipai_reliability_errors", "menu_ipai_reliability_error_console", "Open the console"),
        {
            content: "The console lists today's top error first: open it",
            trigger: `.o_list_view .o_data_row:first-child td[name='code']:contains('${TOP_CODE}')`,
            run: "click",
        },
        {
            content: "Its form is open",
            trigger: `.o_form_view .oe_title [name='code']:contains('${TOP_CODE}')`,
        },
        statusIs("Open"),
        // assign
        ...stepUtils.statusbarButtonsSteps("Assign", "Assign the error"),
        {
            content: "Pick the assignee",
            trigger: `${dialog} .o_field_widget[name='user_id'] input`,
            run: `edit ${ASSIGNEE}`,
        },
        {
            content: "Choose them in the list",
            trigger: `.o-autocomplete--dropdown-item a:contains('${ASSIGNEE}')`,
            run: "click",
        },
        {
            content: "The assignee is picked",
            trigger: `${dialog} .o_field_widget[name='user_id'] input:value('${ASSIGNEE}')`,
        },
        {
            trigger: `${dialog} footer button[name='action_apply']`,
            run: "click",
        },
        dialogClosed(),
        {
            content: "The form shows the assignee",
            trigger: `.o_form_view .o_field_widget[name='user_id']:contains('${ASSIGNEE}')`,
        },
        // comment
        {
            content: "Write a message in the chatter",
            trigger: ".o-mail-Chatter-topbar button.o-mail-Chatter-sendMessage",
            run: "click",
        },
        {
            trigger: ".o-mail-Composer-input",
            run: `edit ${COMMENT}`,
        },
        {
            trigger: ".o-mail-Composer-send:enabled",
            run: "click",
        },
        {
            content: "The message is in the thread",
            trigger: `.o-mail-Message-body:contains('${COMMENT}')`,
        },
        // snooze with a preset
        ...stepUtils.statusbarButtonsSteps("Snooze", "Snooze the error"),
        {
            content: "Snooze for one week",
            trigger: `${dialog} .o_field_widget[name='snooze_preset'] label:contains('1 week')`,
            run: "click",
        },
        {
            content: "No date picker (the date is for 'Until a date' only)",
            trigger: `${dialog}:not(:has(.o_field_widget[name='snooze_until']))`,
        },
        {
            trigger: `${dialog} footer button[name='action_apply']`,
            run: "click",
        },
        dialogClosed(),
        statusIs("Snoozed"),
        {
            content: "The chatter says until when",
            trigger: ".o-mail-Message:contains('Snoozed until')",
        },
        // resolve in a release
        ...stepUtils.statusbarButtonsSteps("Resolve in release", "Resolve it in a release"),
        {
            content: "The dialog hints at the current release",
            trigger: `${dialog} .o_field_widget[name='current_release']:contains('${CURRENT_RELEASE}')`,
        },
        {
            content: "A release that is not a version is refused",
            trigger: `${dialog} .o_field_widget[name='version'] input`,
            run: "edit next week",
        },
        {
            trigger: `${dialog} footer button[name='action_apply']`,
            run: "click",
        },
        {
            content: "with a message saying what a release looks like",
            trigger: ".o_error_dialog:contains('A release looks like 1.4.2')",
        },
        {
            trigger: ".o_error_dialog footer button.btn-primary",
            run: "click",
        },
        {
            content: "The resolve dialog is still open: enter the release",
            trigger: `${dialog} .o_field_widget[name='version'] input`,
            run: `edit ${RELEASE}`,
        },
        {
            trigger: `${dialog} footer button[name='action_apply']`,
            run: "click",
        },
        dialogClosed(),
        statusIs("Resolved"),
        {
            content: "The form shows the release",
            trigger: `.o_form_view .o_field_widget[name='resolved_in_version']:contains('${RELEASE}')`,
        },
    ],
});

registry.category("web_tour.tours").add("ipai_reliability_failure_mode_tour", {
    url: "/odoo",
    steps: () => [
        ...openMenu("menu_ipai_reliability_errors", "menu_ipai_reliability_unclassified", "Open the unclassified errors"),
        {
            content: "Open the unclassified error",
            trigger: ".o_list_view .o_data_row td:contains('Quota exceeded for tenant')",
            run: "click",
        },
        ...stepUtils.statusbarButtonsSteps(
            "Create failure mode from this error",
            "Propose a failure mode",
            ".o_form_view .oe_title [name='code']:contains('UNCLASSIFIED.UNKNOWN')"
        ),
        {
            content: "The dialog proposes a code from the message",
            trigger: `${dialog} .o_field_widget[name='code'] input:value(${exactly(PROPOSED_CODE)})`,
        },
        {
            content: "Name it",
            trigger: `${dialog} .o_field_widget[name='name'] input`,
            run: `edit ${MODE_NAME}`,
        },
        {
            trigger: `${dialog} footer button[name='action_create']`,
            run: "click",
        },
        dialogClosed(),
        {
            // (lifecycle is on the failure mode's form, not on the error's, which now has the code too)
            content: "The new failure mode is open",
            trigger: [
                `${modeForm} .o_field_widget[name='code']:text(${PROPOSED_CODE})`,
                `${modeForm} .o_field_widget[name='code'] input:value(${exactly(PROPOSED_CODE)})`,
            ].join(", "),
        },
    ],
});

registry.category("web_tour.tours").add("ipai_reliability_resolution_tour", {
    url: "/odoo",
    steps: () => [
        ...openMenu("menu_ipai_reliability_errors", "menu_ipai_reliability_error_console", "Open the console"),
        {
            content: "Open the error",
            trigger: `.o_list_view .o_data_row td[name='code']:contains('${RESOLUTION_CODE}')`,
            run: "click",
        },
        ...stepUtils.statusbarButtonsSteps(
            "Create resolution record",
            "Write a resolution record for it",
            `.o_form_view .oe_title [name='code']:contains('${RESOLUTION_CODE}')`
        ),
        {
            content: "A new resolution opens, prefilled from the error",
            trigger: `${resolutionForm} .o_field_widget[name='code'] input:value('${RESOLUTION_CODE}')`,
        },
        {
            content: "Title it",
            trigger: `${resolutionForm} .oe_title .o_field_widget[name='name'] input`,
            run: `edit ${RESOLUTION_TITLE}`,
        },
        {
            content: "Write the summary",
            trigger: `${resolutionForm} .o_field_widget[name='summary'] textarea`,
            run: `edit ${SUMMARY}`,
        },
        {
            content: "Write the root cause",
            trigger: `${resolutionForm} .o_field_widget[name='root_cause'] textarea`,
            run: `edit ${ROOT_CAUSE}`,
        },
        ...stepUtils.statusbarButtonsSteps("Submit for review", "Submit it for review"),
        statusIs("Review"),
        {
            content: "It is saved under its title",
            trigger: `.o_breadcrumb .active:contains('${RESOLUTION_TITLE}')`,
        },
    ],
});

registry.category("web_tour.tours").add("ipai_reliability_alert_rule_tour", {
    url: "/odoo",
    steps: () => [
        ...openMenu("menu_ipai_reliability_config", "menu_ipai_reliability_alert_rules", "Open the alert rules"),
        {
            content: "Create a rule",
            trigger: ".o_control_panel .o_list_button_add, .o_control_panel .o-kanban-button-new",
            run: "click",
        },
        {
            content: "Name it",
            trigger: ".o_form_view .oe_title .o_field_widget[name='name'] input",
            run: `edit ${RULE_NAME}`,
        },
        {
            content: "When a new error appears",
            trigger: ".o_form_view .o_field_widget[name='trigger'] .o_select_menu_toggler",
            run: "click",
        },
        {
            trigger: ".o_select_menu_menu .o_select_menu_item:contains('New error')",
            run: "click",
        },
        {
            content: "The trigger is New error",
            trigger: [
                ".o_form_view .o_field_widget[name='trigger'] .o_select_menu_toggler:contains('New error')",
                ".o_form_view .o_field_widget[name='trigger'] input:value('New error')",
            ].join(", "),
        },
        {
            content: "The email action is on",
            trigger: ".o_form_view .o_field_widget[name='action_email'] input:checked",
        },
        {
            content: "Add a recipient",
            trigger: ".o_form_view .o_field_widget[name='partner_ids'] input",
            run: `edit ${RECIPIENT}`,
        },
        {
            content: "Choose them in the list",
            trigger: `.o-autocomplete--dropdown-item a:contains('${RECIPIENT}')`,
            run: "click",
        },
        {
            content: "The recipient is a tag",
            trigger: `.o_form_view .o_field_widget[name='partner_ids'] .o_tag:contains('${RECIPIENT}')`,
        },
        ...stepUtils.saveForm(),
        {
            content: "The rule is saved",
            trigger: `.o_breadcrumb .active:contains('${RULE_NAME}')`,
        },
    ],
});
