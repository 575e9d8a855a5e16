"""The Hub's evaluation results of a run: the card's `model-index` (huggingface_hub `EvalResult`) and the
`.eval_results/` files (`EvalResultEntry`), read back as the Hub's own parsers read them."""

import yaml
from huggingface_hub import ModelCard, parse_eval_result_entries

from fuscore.eval_results import eval_results_entries, hub_dataset_id, write_eval_results
from fuscore.model_card import write_model_card


METRICS = {"srcc": 0.81234, "plcc": 0.8, "srcc_within": 0.7, "pairwise_accuracy_within": 0.75, "runtime": 3.0}


def test_one_file_per_metric_in_the_hub_format():
    entries = eval_results_entries(METRICS, "HHOODD/EVAFusion_dataset", "overall", revision="abc123",
                                   date="2026-12-01", source_url="https://example.org/run", notes="objective fuscore")
    assert sorted(entries) == ["fuscore_pairwise_accuracy_within.yaml", "fuscore_plcc.yaml", "fuscore_srcc.yaml",
                               "fuscore_srcc_within.yaml"]
    [result] = entries["fuscore_srcc.yaml"]
    assert (result.dataset_id, result.task_id, result.dataset_revision) == ("HHOODD/EVAFusion_dataset", "overall", "abc123")
    assert result.value == 0.8123 and result.date == "2026-12-01" and result.source_url == "https://example.org/run"
    assert result.notes.startswith("SRCC") and result.notes.endswith("objective fuscore")


def test_written_only_for_an_evaluation_on_a_hub_dataset(tmp_path):
    hub = {"metrics": METRICS, "dataset": "HHOODD/EVAFusion_dataset", "synthetic": False, "objective": "deqa"}
    written = write_eval_results(tmp_path, hub)
    assert {path.name for path in written} == set(eval_results_entries(METRICS, "x/y"))
    raw = yaml.safe_load((tmp_path / ".eval_results" / "fuscore_plcc.yaml").read_text())
    assert raw == [{"dataset": {"id": "HHOODD/EVAFusion_dataset", "task_id": "default"}, "value": 0.8,
                    "notes": "PLCC (Pearson) of the predicted overall score with the MOS; objective deqa"}]
    [entry] = parse_eval_result_entries(raw)
    assert (entry.dataset_id, entry.value) == ("HHOODD/EVAFusion_dataset", 0.8)
    synthetic = {"metrics": METRICS, "dataset": "synthetic (held-out seed 1000003)", "synthetic": True}
    assert write_eval_results(tmp_path / "s", synthetic) == [] and not (tmp_path / "s").exists()
    local = tmp_path / "my_table"
    local.mkdir()
    assert hub_dataset_id({"dataset": str(local)}) is None
    assert hub_dataset_id({"dataset": "tables/held_out", "hub_dataset": "org/ivif-bench"}) == "org/ivif-bench"


def test_the_card_parses_as_a_model_card_with_its_eval_results(tmp_path):
    (tmp_path / "config.json").write_text('{"base_config": {"_name_or_path": "Qwen/Qwen3-VL-2B-Instruct"}}')
    evaluation = {"metrics": METRICS, "dataset": "HHOODD/EVAFusion_dataset", "synthetic": False, "objective": "fuscore"}
    path = write_model_card(tmp_path, evaluation, repo_id="org/fuscore")
    card = ModelCard.load(path)
    data = card.data
    assert data.pipeline_tag == "other" and data.library_name == "transformers" and data.license == "apache-2.0"
    assert data.base_model == "Qwen/Qwen3-VL-2B-Instruct" and data.datasets == ["HHOODD/EVAFusion_dataset"]
    results = {result.metric_type: result for result in data.eval_results}
    assert set(results) == {"pearsonr", "spearmanr", "srcc_within", "pairwise_accuracy_within"}
    assert results["spearmanr"].metric_value == 0.8123 and results["pearsonr"].metric_value == 0.8
    for result in data.eval_results:
        assert result.dataset_type == "HHOODD/EVAFusion_dataset" and result.dataset_split == "test"
    for name, metric_type in (("plcc", "pearsonr"), ("srcc", "spearmanr")):
        [entry] = parse_eval_result_entries(yaml.safe_load((tmp_path / ".eval_results" / f"fuscore_{name}.yaml").read_text()))
        assert entry.value == results[metric_type].metric_value
        assert f"`.eval_results/fuscore_{name}.yaml`" in card.text


def test_a_synthetic_evaluation_is_named_as_such_and_gets_no_eval_results_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    evaluation = {"metrics": METRICS, "dataset": "synthetic (held-out seed 1000003)", "synthetic": True}
    card = ModelCard.load(write_model_card(tmp_path, evaluation))
    assert {result.dataset_type for result in card.data.eval_results} == {"fuscore_data.synthetic"}
    assert card.data.datasets is None and card.data.base_model is None
    assert "not human ratings" in card.text
    assert ".eval_results" not in card.text and not (tmp_path / ".eval_results").exists()


def test_an_unevaluated_model_has_a_card_without_results(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    card = ModelCard.load(write_model_card(tmp_path, {}))
    assert card.data.eval_results is None and card.data.pipeline_tag == "other"
