"""The Hub's `.eval_results/` entries rendered from a run's evaluation (fuscore.eval_results)."""

import yaml

from fuscore.eval_results import eval_results_entries, hub_dataset_id, write_eval_results


METRICS = {"srcc": 0.81234, "plcc": 0.8, "srcc_within": 0.7, "pairwise_accuracy_within": 0.75, "runtime": 3.0}


def test_one_file_per_metric_in_the_hub_format():
    entries = eval_results_entries(METRICS, "HHOODD/EVAFusion_dataset", "overall", revision="abc123",
                                   date="2026-12-01", source_url="https://example.org/run", notes="objective fuscore")
    assert sorted(entries) == ["fuscore_pairwise_accuracy_within.yaml", "fuscore_plcc.yaml", "fuscore_srcc.yaml",
                               "fuscore_srcc_within.yaml"]
    [result] = entries["fuscore_srcc.yaml"]
    assert result["dataset"] == {"id": "HHOODD/EVAFusion_dataset", "task_id": "overall", "revision": "abc123"}
    assert result["value"] == 0.8123 and result["date"] == "2026-12-01"
    assert result["source"] == {"url": "https://example.org/run"}
    assert result["notes"].startswith("SRCC") and result["notes"].endswith("objective fuscore")


def test_written_only_for_an_evaluation_on_a_hub_dataset(tmp_path):
    hub = {"metrics": METRICS, "dataset": "HHOODD/EVAFusion_dataset", "synthetic": False, "objective": "deqa"}
    written = write_eval_results(tmp_path, hub)
    assert {path.name for path in written} == set(eval_results_entries(METRICS, "x/y"))
    loaded = yaml.safe_load((tmp_path / ".eval_results" / "fuscore_plcc.yaml").read_text())
    assert loaded == [{"dataset": {"id": "HHOODD/EVAFusion_dataset", "task_id": "default"}, "value": 0.8,
                       "notes": "PLCC (Pearson) of the predicted overall score with the MOS; objective deqa"}]
    synthetic = {"metrics": METRICS, "dataset": "synthetic (held-out seed 1000003)", "synthetic": True}
    assert write_eval_results(tmp_path / "s", synthetic) == [] and not (tmp_path / "s").exists()
    local = tmp_path / "my_table"
    local.mkdir()
    assert hub_dataset_id({"dataset": str(local)}) is None
    assert hub_dataset_id({"dataset": "tables/held_out", "hub_dataset": "org/ivif-bench"}) == "org/ivif-bench"


def test_the_model_card_lists_them_beside_model_index(tmp_path):
    from fuscore.model_card import write_model_card

    (tmp_path / "config.json").write_text("{}")
    evaluation = {"metrics": METRICS, "dataset": "HHOODD/EVAFusion_dataset", "synthetic": False, "objective": "fuscore"}
    card = write_model_card(tmp_path, evaluation, repo_id="org/fuscore").read_text()
    header = yaml.safe_load(card.split("---")[1])
    index = {m["type"]: m["value"] for m in header["model-index"][0]["results"][0]["metrics"]}
    for name in ("plcc", "srcc"):
        assert yaml.safe_load((tmp_path / ".eval_results" / f"fuscore_{name}.yaml").read_text())[0]["value"] == index[name]
        assert f"`.eval_results/fuscore_{name}.yaml`" in card
    synthetic = tmp_path / "synthetic"
    synthetic.mkdir()
    (synthetic / "config.json").write_text("{}")
    card = write_model_card(synthetic, {"metrics": METRICS, "dataset": "synthetic", "synthetic": True}).read_text()
    assert "model-index" in card and ".eval_results" not in card and not (synthetic / ".eval_results").exists()
