"""`fuscore_data`: the rating table of DESIGN.md section 2, and everything that makes, reads, checks or writes one.

A rating table has one row per fused image (`fused`, `ir`, `vis` images; `pair_id`, the source pair or scene;
`method`; `mos` and its optional spread `mos_std`; the four optional sub-dimensions; the optional artifact map
`artifact_heatmap`, EVAFusion's or the synthetic benchmark's). `schema` defines those columns, `validation` lists every problem of a table naming its row and
file, `tables` loads and atomically saves tables (image folder or `save_to_disk`), maps scores to [1, 5] and splits
by `pair_id`, `importers` turns public layouts (VIFB, EVAFusion) into rating tables, `synthetic` is the embedded
synthetic benchmark (labels by construction, never human ratings) and `cards` writes dataset cards. It builds on
`datasets`, `huggingface_hub`, numpy, scipy and PIL, and from the project uses only `processing_fuscore.load_image`
(the one image loader), `configuration_fuscore.SUB_DIMENSIONS` (the one list of sub-dimensions) and `fuscore.atomic` (the one writer). The trainer, the `fuscore` package (CLI, ranking),
the benchmarks and the tests may import it; the Hub remote-code files (`*_fuscore.py` but `trainer_fuscore.py`)
never do, as they must run where FuScore is not installed. Nothing is imported here: import the submodules.
"""
