"""The page of ``gradwise ensemble``: each member's test accuracy beside the ensemble's."""

from __future__ import annotations

from .page import e, fmt_number, fmt_percent, page, section, table


def render_ensemble(result: dict) -> str:
    """``ensemble.html`` from the dict :func:`gradwise.train.run_ensemble.evaluate_runs`
    returns."""
    best_member = max(r["test_accuracy"] for r in result["members"])
    rows = "".join(
        f'<tr><td>{e(r["run"])}</td><td class="num">{e(r["seed"])}</td>'
        f'<td class="num{" best" if r["test_accuracy"] == best_member else ""}">'
        f'{fmt_percent(r["test_accuracy"])}</td><td class="num">{fmt_number(r["test_loss"])}'
        f"</td></tr>" for r in result["members"])
    average, vote = result["average"], result["vote"]
    rows += (f'<tr><th>average of probabilities</th><td></td><td class="num">'
             f'{fmt_percent(average["test_accuracy"])}</td><td class="num">'
             f'{fmt_number(average["test_loss"])}</td></tr>'
             f'<tr><th>majority vote</th><td></td><td class="num">'
             f'{fmt_percent(vote["test_accuracy"])}</td><td></td></tr>')
    members_table = ('<div class="wide"><table class="runs"><thead><tr><th>member</th>'
                     '<th class="num">seed</th><th class="num">test accuracy</th>'
                     f'<th class="num">test loss</th></tr></thead>{rows}</table></div>')
    n = len(result["members"])
    facts = table([
        ("members", fmt_number(n)),
        ("weights", e(f"checkpoints/{result['checkpoint']}.pt")),
        ("data", e(result["data"])),
        ("test examples", fmt_number(result["test_examples"])),
        ("members' mean accuracy", f"{fmt_percent(result['member_mean_accuracy'])} "
                                   f"(std {100 * result['member_std_accuracy']:.2f} points)"),
        ("gain of the average over the mean member",
         f"{100 * (average['test_accuracy'] - result['member_mean_accuracy']):+.2f} points"),
        ("disagreement", f"{fmt_percent(result['disagreement'])} of the examples, per pair "
                         "of members"),
    ])
    body = (f'<p class="kicker">gradwise ensemble</p><h1>Ensemble of {n} runs</h1>'
            + section("members", "Members and ensemble",
                      "Test accuracy of each member, of the mean of their softmax outputs, and "
                      "of their majority vote.", members_table)
            + section("facts", "Facts", "Where the gain comes from: members that disagree "
                      "on some examples and are right on different ones.", facts))
    return page(f"Ensemble of {n} runs", body, kind="ensemble")
