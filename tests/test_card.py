"""The results card (`python -m labs card`): numbers from the saved files, plots, placeholders,
unreadable files, two machines side by side, and the CLI's exit codes.

tests/fixtures/results_cpu/ holds the findings notebooks 01-05 saved on the course's 2-core CI
machine (2026-11-22) and notebooks 06-07 saved on a 2-core AVX-512 EPYC (2026-12-01, so the card's
date, its last save, is that one); the tests copy and alter them in tmp_path. 07's plan, inputs,
replicas and Little's-law table were recomputed from that file's own measurements (labs.cost)
when 07 began sizing replicas by arrival rate and pricing the card at the article's tok/s.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import pytest

from labs import Burst, Workload, card
from labs.__main__ import main
from labs.errors import ResultsError
from labs.model import article, cost
from labs.results.records import RequestRecord, RunResult, save_sweep

FIXTURES = Path(__file__).parent / "fixtures" / "results_cpu"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def cpu(tmp_path: Path) -> Path:
    folder = tmp_path / "cpu"
    shutil.copytree(FIXTURES, folder)
    return folder


def _edit(folder: Path, notebook: str, **changes: object) -> None:
    """Rewrite one saved file: top-level keys, or findings keys given as findings__KEY."""
    path = folder / f"{notebook}.json"
    doc = json.loads(path.read_text())
    for key, value in changes.items():
        if key.startswith("findings__"):
            name = key.removeprefix("findings__")
            if value is None:
                doc["findings"].pop(name, None)
            else:
                doc["findings"][name] = value
        else:
            doc[key] = value
    path.write_text(json.dumps(doc))


def _row(page: str, label: str) -> str:
    """The cells of the table row whose first cell is `label`, as text."""
    match = re.search(r"<tr><td>" + re.escape(label) + r"</td>(.*?)</tr>", page)
    assert match, f"no row {label!r}"
    return match.group(1)


def _tr(*cells: str) -> str:
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _section(page: str, key: str) -> str:
    match = re.search(rf'<section id="{key}">(.*?)</section>', page, re.S)
    assert match, f"no section {key}"
    return match.group(1)


def _pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


# --- one machine ----------------------------------------------------------------------------

def test_summary_holds_each_notebooks_numbers(cpu: Path) -> None:
    s = card.summarize(cpu)
    assert s["machine"]["hardware"] == "Linux x86_64, 2 x AMD EPYC"
    assert s["machine"]["vllm_version"] == "0.32.0"
    assert {v["status"] for v in s["sections"].values()} == {"ok"}
    ceiling = s["sections"]["ceiling"]["values"]
    assert ceiling["ceiling_tok_s"] == pytest.approx(47.11, abs=0.01)
    assert ceiling["single_stream_tok_s"] == pytest.approx(15.99, abs=0.01)  # the best of three
    assert ceiling["weight_gb"] == pytest.approx(0.538, abs=0.001)
    batching = s["sections"]["batching"]["values"]
    assert batching["cliff_users"] == 64 and batching["best_at_users"] == 128
    kv = s["sections"]["kv"]
    assert kv["values"]["pool_tokens"] == 40 * 128 == 5120
    assert kv["values"]["demand_over_pool"] == pytest.approx(3.3, abs=0.01)
    staircase = kv["series"]["ttft_s"]
    assert staircase == sorted(staircase) and len(staircase) == 16
    admission = s["sections"]["admission"]["values"]
    assert admission["gateway_shed"] == 19
    assert admission["gateway_goodput_rps"] == pytest.approx(0.719, abs=0.001)
    capacity = s["sections"]["capacity"]["values"]
    assert capacity["users_per_replica"] == 16 and capacity["replicas"] == 32
    assert capacity["users"] == 500 and capacity["think_s"] == 30
    assert capacity["replicas_by_arrival"] == 3   # Little: 500 x 2.6 s / 32.6 s = 40 in flight
    assert capacity["card_tok_s"] == article.BATCHING[32][0] and capacity["card_users"] == 32
    assert capacity["cold_start_s"] == pytest.approx(23.1, abs=0.1)
    assert capacity["card_break_even"] == pytest.approx(0.529, abs=0.001)  # at 525 tok/s, measured
    assert capacity["roofline_tok_s"] == pytest.approx(732.07, abs=0.01)   # the upper bound
    prefix = s["sections"]["prefix"]["values"]
    assert prefix["shared_blocks"] == 7 and prefix["running_on"] == 16 > prefix["running_off"]
    assert prefix["hit_rate"] == pytest.approx(0.826, abs=0.001)
    assert prefix["ttft_off_over_on"] == pytest.approx(14.20 / 2.68, rel=0.01)
    json.dumps(s, allow_nan=False)  # the summary is plain JSON


def test_card_shows_the_numbers_beside_the_article(cpu: Path) -> None:
    page = card.render_html([card.summarize(cpu)], images=False)
    assert "Linux x86_64, 2 x AMD EPYC · 2026-12-01" in page
    assert "SmolLM2-135M-Instruct" in page and "0.32.0" in page
    for label, cells in [
        # ceiling and single stream: ours, then the article's 480 / 14 = 34.3 and 28–30
        ("memory bandwidth, read (GB/s)", ("25.3", "480.0")),
        ("ceiling = bandwidth / weights (tok/s)", ("47.1", "34.3")),
        ("single stream, measured (tok/s)", ("16.0", "28–30")),
        # the cliff (the article's table stops before one)
        ("cliff: throughput flattens after (users)", ("64", "not reached by 64 users")),
        # the pool, the demand, the staircase's end, no errors
        ("pool = blocks x block size (tokens)", ("5,120", "38,816")),
        ("demand / pool", ("3.3", "3.3")),
        ("TTFT, last request (s)", ("76.1", "55.0")),
        ("HTTP errors", ("0", "0")),
    ]:
        assert _row(page, label) == "".join(f"<td>{c}</td>" for c in cells), label
    # the batching table, the article's levels merged in
    batching = _section(page, "batching")
    assert _tr("64", "185", "2.9", "4.24", "1,041", "16.0") in batching
    assert _tr("32", "—", "—", "—", "525", "16.0") in batching
    # naive vs bounded vs gateway
    admission = _section(page, "admission")
    assert _tr("d) gateway", "11", "19", "0.72", "0.72", "yes") in admission
    assert "<tr><td>b) engine caps</td><td>30</td><td>0</td><td>15.45</td>" in admission
    assert "not measured yet" not in page


def test_a_plan_saved_before_the_arrival_rate_sizing_still_reads(cpu: Path) -> None:
    # 07 once named the key after the users and priced the card at its roofline only.
    _edit(cpu, "07_capacity_and_cost", findings__plan=[
        {"setup": "this machine", "numbers": "measured here", "users per replica": 16,
         "replicas for 500 users": 32},
        {"setup": "RTX 4000 Ada + Qwen2.5-7B", "numbers": "PREDICTED from datasheets",
         "aggregate tok/s": 732.07, "USD per million output tokens": 0.19}])
    s = card.summarize(cpu)
    capacity = s["sections"]["capacity"]
    assert capacity["status"] == "ok" and capacity["values"]["replicas"] == 32
    assert capacity["values"]["roofline_tok_s"] == 732.07
    assert capacity["values"]["card_tok_s"] is None
    assert capacity["values"]["replicas_by_arrival"] is None
    page = card.render_html([s], images=False)
    arrival = _row(page, "  replicas by arrival rate (Little&#x27;s law)")
    assert arrival == "<td>—</td><td>—</td>"
    assert _row(page, "  replicas, every user always in flight") == "<td>32</td><td>—</td>"


def test_another_user_count_in_07_still_fills_the_replicas_rows(cpu: Path) -> None:
    """07's plan rows come from `cost.summary_row`, whose keys do not name the users: with
    1,234 users instead of 500, the card shows the new replica counts, not blanks."""
    doc = json.loads((cpu / "07_capacity_and_cost.json").read_text())
    rows = doc["findings"]["plan"]
    here = next(r for r in rows if r["setup"] == "this machine")
    point = {"concurrency": here["users per replica"], "agg_tok_s": here["aggregate tok/s"],
             "per_user_tok_s": here["per-user tok/s"], "ttft_s_p95": here["p95 TTFT (s)"]}
    inputs = dict(users=1234, usd_per_hour=here["USD/hour"], api_usd_per_million=1.0,
                  source=here["numbers"], output_tokens=64, think_s=here["think time (s)"])
    new_here = cost.summary_row("this machine", point, **inputs)
    _edit(cpu, "07_capacity_and_cost",
          findings__plan=[new_here if r is here else r for r in rows])
    values = card.summarize(cpu)["sections"]["capacity"]["values"]
    assert values["users"] == 1234
    assert values["replicas"] == cost.replicas_needed(1234, point["concurrency"])
    assert values["replicas"] > 32  # more users than the fixture's 500: more replicas
    assert values["replicas_by_arrival"] == new_here["replicas, by arrival rate"]
    page = card.render_html([card.summarize(cpu)], images=False)
    assert _row(page, "  replicas, every user always in flight").startswith(
        f"<td>{values['replicas']:.0f}</td>")


def test_article_column_is_labs_article(cpu: Path) -> None:
    page = card.render_html([card.summarize(cpu)], images=False)
    assert _row(page, "KV blocks").endswith(f"<td>{article.NUM_GPU_BLOCKS:,}</td>")
    plateau = article.KV_TTFT_PLATEAU_S
    assert _row(page, "TTFT, last request (s)").endswith(f"<td>{plateau:.1f}</td>")
    assert _row(page, "1 user (tok/s)").endswith(f"<td>{article.BATCHING[1][0]:.1f}</td>")
    lo, hi = article.BOUNDED_ADMITTED_TTFT_S
    gateway = _row(page, "gateway: p95 TTFT of served requests (s)")
    assert gateway.endswith(f"<td>{lo:.0f}–{hi:.0f}</td>")


def test_every_measured_section_embeds_one_png(cpu: Path) -> None:
    (cpu / "01_provision.json").unlink()
    page = card.render_html([card.summarize(cpu)])
    images = _pngs(page)
    assert len(images) == 6  # 02-07; 01 has no data, so no plot
    assert all(img.startswith(PNG_MAGIC) and len(img) > 5000 for img in images)
    assert "<img" not in _section(page, "provision")
    assert not re.search(r'(src|href)="(?!data:)', page)  # self-contained: nothing to fetch


def test_missing_notebooks_are_placeholders(cpu: Path) -> None:
    for name in ("03_continuous_batching", "04_kv_cache_exhaustion", "05_bounded_admission"):
        (cpu / f"{name}.json").unlink()
    s = card.summarize(cpu)
    page = card.render_html([s], images=False)
    for number, name in (("03", "03_continuous_batching"), ("05", "05_bounded_admission")):
        assert f"not measured yet — run notebook {number} (notebooks/{name}.ipynb)" in page
    assert "not measured yet" not in _section(page, "ceiling")
    assert _row(page, "pool = blocks x block size (tokens)") == "<td>—</td><td>38,816</td>"
    assert s["sections"]["kv"]["status"] == "missing"


def test_other_schema_version_is_named(cpu: Path) -> None:
    _edit(cpu, "03_continuous_batching", schema_version=2)
    s = card.summarize(cpu)
    message = s["sections"]["batching"]["message"]
    assert s["sections"]["batching"]["status"] == "schema"
    assert "schema_version 2" in message and "reads version 1" in message
    assert "schema_version 2" in card.render_html([s], images=False)


def test_broken_and_partial_files_do_not_crash(cpu: Path) -> None:
    (cpu / "02_bandwidth_ceiling.json").write_text('{"schema_version": 1, "findings": {"ceil')
    _edit(cpu, "04_kv_cache_exhaustion", findings__ttft_by_request=None, findings__ttft_last_s=None)
    _edit(cpu, "05_bounded_admission", findings__comparison="not a table")
    s = card.summarize(cpu)
    assert s["sections"]["ceiling"]["status"] == "unreadable"
    assert "02_bandwidth_ceiling.json could not be read" in s["sections"]["ceiling"]["message"]
    kv = s["sections"]["kv"]
    assert kv["status"] == "partial" and "no ttft_by_request" in kv["message"]
    assert kv["values"]["pool_tokens"] == 5120 and kv["values"]["ttft_last_s"] is None
    assert s["sections"]["admission"]["status"] == "partial"
    page = card.render_html([s])  # with plots: an empty series must not break them
    assert "re-run notebook 04" in page and _pngs(page)


def test_staircase_falls_back_to_the_raw_records(cpu: Path) -> None:
    _edit(cpu, "04_kv_cache_exhaustion", findings__ttft_by_request=None,
          findings__ttft_first_s=None, findings__ttft_last_s=None)
    records = [RequestRecord(index=i, scheduled_s=0, sent_s=0, end_s=10 + i,
                             token_times_s=(2.0 * (i // 2 + 1), 9.0), status=200)
               for i in range(6)]
    run = RunResult(label="kv pressure", shape=Burst(6), metadata={}, records=tuple(records),
                    workload=Workload(prompt_tokens=1000, max_tokens=1))
    save_sweep([run],
               cpu / "04_kv_cache_exhaustion-runs.json")
    kv = card.summarize(cpu)["sections"]["kv"]
    assert kv["status"] == "ok"
    assert kv["series"]["ttft_s"] == [2.0, 2.0, 4.0, 4.0, 6.0, 6.0]
    assert (kv["values"]["ttft_first_s"], kv["values"]["ttft_last_s"]) == (2.0, 6.0)


def test_no_results_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match=r"no results folder at .*run the notebooks first"):
        card.summarize(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "bench.json").write_text("{}")
    with pytest.raises(ResultsError, match=r"no saved results in .*notebooks 01-07"):
        card.summarize(tmp_path / "empty")


# --- two machines ---------------------------------------------------------------------------

@pytest.fixture
def gpu(tmp_path: Path) -> Path:
    """The same files, as if saved on a GPU with other numbers and no notebook 05."""
    folder = tmp_path / "gpu"
    shutil.copytree(FIXTURES, folder)
    for path in folder.glob("*.json"):
        doc = json.loads(path.read_text())
        doc.update(hardware="NVIDIA L4", model="Qwen/Qwen2.5-7B-Instruct",
                   saved_at="2026-12-01T10:00:00+0000")
        path.write_text(json.dumps(doc))
    _edit(folder, "04_kv_cache_exhaustion", findings__num_gpu_blocks=6000,
          findings__block_size=16, findings__pool_tokens=96000)
    _edit(folder, "02_bandwidth_ceiling", findings__ceiling_tok_s=19.7)
    (folder / "05_bounded_admission.json").unlink()
    return folder


def test_compare_puts_both_machines_in_adjacent_columns(cpu: Path, gpu: Path) -> None:
    page = card.render_html([card.summarize(cpu), card.summarize(gpu)], images=False)
    cpu_label, gpu_label = "Linux x86_64, 2 x AMD EPYC · 2026-12-01", "NVIDIA L4 · 2026-12-01"
    assert f"<th>{cpu_label}</th><th>{gpu_label}</th><th>article</th>" in page
    assert _row(page, "pool = blocks x block size (tokens)") == (
        "<td>5,120</td><td>96,000</td><td>38,816</td>")
    assert _row(page, "ceiling = bandwidth / weights (tok/s)") == (
        "<td>47.1</td><td>19.7</td><td>34.3</td>")
    assert f"{gpu_label}: not measured yet — run notebook 05" in page
    assert _row(page, "gateway: shed with 503").startswith("<td>19</td><td>—</td>")
    assert f'<th colspan="3">{cpu_label}</th><th colspan="3">{gpu_label}</th>' in page


def test_same_machine_twice_is_told_apart(cpu: Path) -> None:
    s = card.summarize(cpu)
    page = card.render_html([s, s], images=False)
    assert "<th>A: Linux x86_64, 2 x AMD EPYC · 2026-12-01</th><th>B: Linux" in page


def test_compare_reads_a_card_json_from_elsewhere(cpu: Path, gpu: Path, tmp_path: Path) -> None:
    out = card.write_card([card.summarize(gpu)], tmp_path / "friend" / "card.html")
    friend = card.load_summary(out.with_suffix(".json"))
    assert friend["sections"]["kv"]["values"]["pool_tokens"] == 96000
    page = card.render_html([card.summarize(cpu), friend], images=False)
    assert "<td>5,120</td><td>96,000</td>" in page
    (tmp_path / "thin.json").write_text('{"kind": "card", "schema_version": 1, '
                                        '"sections": {"kv": {"status": "ok"}}}')
    thin = card.render_html([card.load_summary(tmp_path / "thin.json")])
    assert "unknown machine" in thin and "not measured yet — run notebook 03" in thin
    (tmp_path / "odd.json").write_text('{"kind": "sweep"}')
    with pytest.raises(ResultsError, match=r"not a card\.json"):
        card.load_summary(tmp_path / "odd.json")


# --- the CLI --------------------------------------------------------------------------------

def test_cli_writes_the_card_and_its_json(cpu: Path, capsys: pytest.CaptureFixture) -> None:
    (cpu / "05_bounded_admission.json").unlink()
    assert main(["card", "--results", str(cpu)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(cpu / "card.html")
    assert "no results yet from notebook 05" in err
    assert _pngs((cpu / "card.html").read_text())
    summary = json.loads((cpu / "card.json").read_text())
    assert summary["kind"] == "card" and summary["sections"]["admission"]["status"] == "missing"


def test_cli_compare(cpu: Path, gpu: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out_path = tmp_path / "both.html"
    assert main(["card", "--compare", str(cpu), str(gpu), "--out", str(out_path)]) == 0
    assert capsys.readouterr().out.strip() == str(out_path)
    page = out_path.read_text()
    assert "NVIDIA L4 · 2026-12-01" in page
    assert len(_pngs(page)) == 7  # 05 drawn for the one machine that has it
    both = json.loads(out_path.with_suffix(".json").read_text())
    assert [c["machine"]["hardware"] for c in both["cards"]] == [
        "Linux x86_64, 2 x AMD EPYC", "NVIDIA L4"]


@pytest.mark.parametrize("args, says", [
    (["--results", "{tmp}/nowhere"], "no results folder at"),
    (["--results", "{tmp}"], "no saved results in"),
    (["--compare", "{cpu}", "{tmp}/nowhere"], "no results folder at"),
])
def test_cli_errors_are_one_line_and_exit_1(args: list[str], says: str, cpu: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    argv = [a.format(tmp=tmp_path, cpu=cpu) for a in args]
    assert main(["card", *argv, "--out", str(tmp_path / "c.html")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: {says}") and err.count("\n") == 1
    assert not (tmp_path / "c.html").exists()


def test_cli_results_and_compare_do_not_mix(cpu: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["card", "--results", str(cpu), "--compare", str(cpu), str(cpu)])
    assert exit_info.value.code == 2
