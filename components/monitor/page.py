"""The monitor's HTML page: self-contained (inline SVG, no script), one per serving window."""
from __future__ import annotations

import html
from typing import Dict, Tuple

from kfx_components.common import distributions
from kfx_components.monitor import comparison
from kfx_components.monitor.comparison import Comparison
from kfx_components.monitor.concept_drift import CONCEPT_DRIFT


def _summary(f) -> Tuple[str, str]:
    """(present/missing, detail) of one feature's statistics."""
    if f is None:
        return "absent", ""
    which = f.WhichOneof("stats")
    s = getattr(f, which) if which else None
    present, missing = distributions.presence(f)
    total = present + missing
    pct = f"{100.0 * missing / total:.1f}% missing" if total else ""
    if which == "num_stats":
        return pct, f"mean {s.mean:.4g}, std {s.std_dev:.4g}"
    if which == "string_stats":
        top = ", ".join(f"{v.value} ({100.0 * v.frequency / max(present, 1):.0f}%)" for v in s.top_values[:3])
        return pct, f"{s.unique} values; {top}"
    return pct, ""


def render(facts: dict, compared: Comparison) -> str:
    """The monitor's page: verdict, reasons, anomalies, moved distributions, online metric, every feature."""
    esc = html.escape
    train_stats, serving_stats = compared.train_binned, compared.serving_binned
    previous_stats, findings = compared.previous_binned, compared.findings
    skew_m, drift_m = compared.skew, compared.drift
    verdict = facts["verdict"]
    if verdict["retrain"]:
        head = (f'<p class="bad"><b>Retraining is due</b>: '
                f'{esc(", ".join(verdict["features"] + ([CONCEPT_DRIFT] if verdict["concept_drift"] else [])))}</p>')
    else:
        head = '<p class="ok"><b>All is well</b>: the serving data matches the training data.</p>'
    reasons = "".join(f"<li>{esc(r)}</li>" for r in verdict["reasons"]) or "<li>none</li>"
    warnings = "".join(f"<li>{esc(w)}</li>" for w in facts["warnings"])
    serving_f, train_f = distributions.feature_stats(serving_stats), distributions.feature_stats(train_stats)
    flagged: Dict[str, str] = {}
    for f in findings:
        flagged[f["feature"]] = ", ".join(filter(None, [flagged.get(f["feature"]), f["kind"]]))
    rows = []
    for name in sorted(set(train_f) | set(serving_f)):
        t_missing, t_detail = _summary(train_f.get(name))
        s_missing, s_detail = _summary(serving_f.get(name))
        sk, dr = skew_m.get(name), drift_m.get(name)
        cls = ' class="bad"' if name in flagged else ""
        cells = [name, flagged.get(name, ""), f"{t_missing} {t_detail}", f"{s_missing} {s_detail}",
                 f"{sk['value']:.3f} / {sk['threshold']:.2g} ({sk['measure'].replace('_', ' ')})" if sk else "",
                 f"{dr['value']:.3f} / {dr['threshold']:.2g}" if dr else ""]
        rows.append(f"<tr{cls}>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    table = ("<table><thead><tr><th>feature</th><th>finding</th><th>training</th><th>serving</th>"
             "<th>skew / threshold</th><th>drift / threshold</th></tr></thead><tbody>"
             + "".join(rows) + "</tbody></table>")
    found_rows = "".join(f"<tr><td>{esc(f['feature'])}</td><td>{esc(f['kind'])}</td><td>{esc(f['short'])}</td>"
                         f"<td>{esc(f['description'])}</td></tr>" for f in findings)
    found_html = (("<table><thead><tr><th>feature</th><th>kind</th><th>anomaly</th><th>description</th></tr>"
                   f"</thead><tbody>{found_rows}</tbody></table>") if findings
                  else '<p class="ok">No anomalies.</p>')
    plots = []
    for f in findings:
        name = f["feature"]
        if f["kind"] == "drift" and previous_stats is not None:
            a, b = distributions.pair(previous_stats, serving_stats, name)
            plots.append(distributions.side_by_side(name, a, b, ("previous window", "this window")))
        elif f["kind"] != "missing":
            a, b = distributions.pair(train_stats, serving_stats, name)
            plots.append(distributions.side_by_side(name, a, b, ("training", "serving")))
    online = facts.get("online") or {}
    if online:
        ci = online.get("ci")
        line = (f"{online['metric']} {online['value']:.4f} online on {online['labelled']} labelled predictions"
                + (f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else "") if online.get("value") is not None
                else f"{online['labelled']} labelled predictions")
        ref = (f"; test {online['metric']} {online['reference']:.4f} ({online['reference_source']})"
               if online.get("reference") is not None else "")
        verdict_line = ("<b>concept drift</b>: worse than the test metric by more than "
                        f"{100 * online['tolerance']:.0f}% across the whole interval" if online["concept_drift"]
                        else online.get("note") or "no concept drift")
        online_html = (f"<p>{esc(line + ref)}</p><p class=\"{'bad' if online['concept_drift'] else 'ok'}\">"
                       f"{verdict_line if online['concept_drift'] else esc(verdict_line)}</p>"
                       f"<p>{online['unmatched_labels']} label(s) matched no logged prediction.</p>")
    else:
        online_html = "<p>No labels given (<code>--labels</code>): the online metric is not known.</p>"
    defaulted = facts.get("defaulted_comparators") or []
    default_note = (f"<p>The schema sets no skew comparator for {esc(', '.join(defaulted))}: the defaults "
                    f"(L-infinity {comparison.DEFAULT_LINF_THRESHOLD}, Jensen-Shannon "
                    f"{comparison.DEFAULT_JS_THRESHOLD}) were used.</p>"
                    if defaulted else "")
    default_note += ("<p>Thresholds are the comparators', raised for small samples to the distance chance alone "
                     f"reaches at their sizes ({distributions.FALSE_ALARM_RATE:.0%} false alarms per check).</p>")
    prev = esc(facts["previous"]) if facts.get("previous") else "none given (<code>--previous</code>)"
    ignored = verdict["ignored_columns"]
    ignored_html = (f"<p>Ignored (not features of the model: dropped before training, or never in its data): "
                    f"{esc(', '.join(ignored))}.</p>" if ignored else "")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>kfx monitor: {esc(facts['model'])}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; max-width: 1200px; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }}
th {{ background: #eee; }} .ok {{ color: #1b5e20; }} .bad {{ color: #b71c1c; }}
tr.bad td {{ background: #ffebee; }} figure {{ display: inline-block; margin: 0.5em 1.5em 1em 0; }}
</style></head><body>
<h1>Monitoring: {esc(facts['model'])}</h1>
{head}
<p>Serving data: {esc(facts['serving_data'])} ({facts['rows']} instances in {facts['requests']} requests,
{esc(facts['format'])}). Model: {esc(facts['model_dir'])}. Previous window: {prev}.</p>
{ignored_html}
<h2>Why</h2><ul>{reasons}</ul>
{f'<h2>Warnings</h2><ul>{warnings}</ul>' if warnings else ''}
<h2>Anomalies</h2>{found_html}
<h2>Distributions that moved</h2>{''.join(plots) or '<p class="ok">None.</p>'}
<h2>Online metric (late labels)</h2>{online_html}
<h2>Every feature: training vs serving</h2>{default_note}{table}
</body></html>
"""
