import { loadJS } from "@web/core/assets";
import { registry } from "@web/core/registry";
import { standardFieldProps } from "@web/views/fields/standard_field_props";
import { Component, onMounted, onPatched, useRef } from "@odoo/owl";

/** Mermaid, bundled with the addon (static/lib/mermaid, see its README): loaded once, on demand. */
export const MERMAID_URL = "/ipai_reliability/static/lib/mermaid/mermaid.min.js";

let mermaidReady = null;

function loadMermaid() {
    if (!mermaidReady) {
        mermaidReady = loadJS(MERMAID_URL).then(() => {
            // strict: labels are text, no script, no click handlers (the runbook is data)
            window.mermaid.initialize({ startOnLoad: false, securityLevel: "strict", theme: "neutral" });
            return window.mermaid;
        });
        mermaidReady.catch(() => (mermaidReady = null));
    }
    return mermaidReady;
}

let diagramCount = 0;

/**
 * Renders ```mermaid blocks of a runbook (``<pre><code class="language-mermaid">`` in the
 * sanitized HTML) as diagrams. A block mermaid cannot parse stays as text, with the reason.
 */
export async function renderMermaidBlocks(root) {
    const blocks = [...root.querySelectorAll("pre > code.language-mermaid")];
    if (!blocks.length) {
        return 0;
    }
    const mermaid = await loadMermaid();
    let rendered = 0;
    for (const code of blocks) {
        const pre = code.parentElement;
        if (!pre.isConnected) {
            continue;
        }
        const id = `o_ipai_mermaid_${++diagramCount}`;
        try {
            const { svg } = await mermaid.render(id, code.textContent);
            const figure = document.createElement("figure");
            figure.className = "o_ipai_mermaid";
            figure.innerHTML = svg; // mermaid's own output, sanitized by it (securityLevel strict)
            pre.replaceWith(figure);
            rendered++;
        } catch (error) {
            document.getElementById(`d${id}`)?.remove(); // mermaid's scratch element
            const note = document.createElement("div");
            note.className = "o_ipai_mermaid_error small text-danger";
            note.textContent = `Diagram not rendered: ${error?.message || error}`;
            pre.after(note);
        }
    }
    return rendered;
}

export class RunbookField extends Component {
    static template = "ipai_reliability.RunbookField";
    static props = { ...standardFieldProps };

    setup() {
        this.root = useRef("root");
        const render = () => this.root.el && renderMermaidBlocks(this.root.el);
        onMounted(render);
        onPatched(render);
    }

    get value() {
        return this.props.record.data[this.props.name] || "";
    }
}

export const runbookField = {
    component: RunbookField,
    displayName: "Runbook (with Mermaid diagrams)",
    supportedTypes: ["html"],
};

registry.category("fields").add("ipai_runbook", runbookField);
