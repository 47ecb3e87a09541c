/**
 * Tours run by tests/test_proof_tours.py (issue 17, "Proof in a real browser") on the rows that
 * test writes; they are not meant to be started from the UI on other data.
 */
import { registry } from "@web/core/registry";
import { stepUtils } from "@web_tour/tour_utils";

// the codes, names and texts the Python test writes and then checks in the database
const RESOLUTION_CODE = "APP.TOUR_PROOF_RESOLUTION";
const RESOLUTION_TITLE = "The proxy re-encodes the webhook body";
const SUMMARY = "Webhook signatures failed for every event behind the new proxy for 40 minutes";
const ROOT_CAUSE = "The proxy re-encoded the JSON body before the signature was checked";
const RULE_NAME = "Proof tour: new errors by email";
const RECIPIENT = "Proof On Call";

const resolutionForm = ".o_form_view:has(.o_field_widget[name='root_cause'])";

function statusIs(label) {
    return {
        content: `the status is ${label}`,
        trigger: `.o_statusbar_status button.o_arrow_button_current:contains('${label}')`,
    };
}

registry.category("web_tour.tours").add("ipai_reliability_resolution_tour", {
    url: "/odoo",
    steps: () => [
        ...stepUtils.goToAppSteps("ipai_reliability.menu_ipai_reliability_root", "Open Reliability"),
        {
            content: "Open the Agent Errors menu",
            trigger: 'button[data-menu-xmlid="ipai_reliability.menu_ipai_reliability_errors"]',
            run: "click",
        },
        {
            content: "Open the console",
            trigger: 'a[data-menu-xmlid="ipai_reliability.menu_ipai_reliability_error_console"]',
            run: "click",
        },
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
        ...stepUtils.goToAppSteps("ipai_reliability.menu_ipai_reliability_root", "Open Reliability"),
        {
            content: "Open Configuration",
            trigger: 'button[data-menu-xmlid="ipai_reliability.menu_ipai_reliability_config"]',
            run: "click",
        },
        {
            content: "Open the alert rules",
            trigger: 'a[data-menu-xmlid="ipai_reliability.menu_ipai_reliability_alert_rules"]',
            run: "click",
        },
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
