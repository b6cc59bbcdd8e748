"""Query data sets for a trained model (shardmap.cpa.model_input, gene_alignment,
vocabulary, tasks.check_query; infer_shard and predict_counterfactual with a query):
the same latents as the training file's for the same cells, genes matched by name,
the stated rules for missing genes, covariates and controls, counterfactuals equal to
CPA.predict in memory, clear refusals, and folders of other tools named."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from scipy import sparse

from shardmap.cpa import CPA
from shardmap.cpa.gene_alignment import GeneAlignment
from shardmap.cpa.h5ad_rows import RowBlock
from shardmap.cpa.inference_model import InferenceModel
from shardmap.cpa.model_folder import check_model_folder
from shardmap.cpa.simulate import simulate_screen
from shardmap.cpa.tasks.check_query import query_summary
from shardmap.cpa.tasks.infer import infer_shard
from shardmap.cpa.tasks.predict import predict_counterfactual
from shardmap.cpa.vocabulary import ModelVocabulary
from shardmap.errors import InputError

SETUP = dict(perturbation_key="condition", dosage_key="dose", control_group="control", covariate_keys=["cell_type"])
CFG = {**SETUP, "batch_key": None, "smiles_key": None, "layer": None, "model": {"recon_loss": "nb"}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("query")
    adata = simulate_screen(n_cells=700, n_genes=30, seed=3)
    del adata.uns["truth"]
    scvi.settings.seed = 0
    fitted = adata.copy()
    CPA.setup_anndata(fitted, **SETUP)
    model = CPA(fitted, n_latent=6, n_hidden=24)
    model.train(max_epochs=2, batch_size=128, accelerator="cpu", seed=0)
    model.save(str(folder / "model"), save_anndata=False)
    adata.write_h5ad(folder / "screen.h5ad")
    return folder / "model", folder / "screen.h5ad", adata


def query(path, name="lab", **entry):
    return {"name": name, "adata": str(path), **entry}


def latents_of(model_dir, path, tmp_path, entry=None, start=0, stop=None, out="s.npz"):
    stop = ad.read_h5ad(path, backed="r").n_obs if stop is None else stop
    infer_shard(model_dir, path, start, stop, tmp_path / out, batch_size=64, rows_per_block=150, query=entry)
    with np.load(tmp_path / out) as saved:
        return {key: saved[key] for key in ("z_basal", "z", "z_corrected")}


def with_extra_genes(adata, n_extra=4, seed=0):
    """``adata`` with its genes reversed and ``n_extra`` genes the model never saw."""
    rng = np.random.default_rng(seed)
    extra = sparse.csr_matrix(rng.poisson(2.0, (adata.n_obs, n_extra)).astype(np.float32))
    reordered = adata[:, adata.var_names[::-1]]
    matrix = sparse.hstack([extra[:, :2], reordered.X, extra[:, 2:]]).tocsr()
    names = [f"extra{i}" for i in range(2)] + list(reordered.var_names) + [f"extra{i}" for i in range(2, n_extra)]
    return ad.AnnData(matrix, adata.obs.copy(), pd.DataFrame(index=names))


def test_query_copy_of_training_rows_gives_their_latents_bit_for_bit(tmp_path, trained):
    model_dir, screen_path, adata = trained
    adata[150:450].copy().write_h5ad(tmp_path / "part.h5ad")
    training = latents_of(model_dir, screen_path, tmp_path, start=150, stop=450, out="train.npz")
    part = latents_of(model_dir, tmp_path / "part.h5ad", tmp_path, query(tmp_path / "part.h5ad"), out="query.npz")
    for key in training:
        np.testing.assert_array_equal(part[key], training[key])


@pytest.mark.parametrize("storage", ["csr", "dense"])
def test_genes_in_another_order_with_extra_genes_match_the_aligned_file(tmp_path, trained, storage):
    model_dir, screen_path, adata = trained
    shuffled = with_extra_genes(adata)
    aligned = adata.copy()
    if storage == "dense":
        shuffled.X, aligned.X = shuffled.X.toarray(), aligned.X.toarray()
    # The independent reference: anndata's own subsetting to the model's genes.
    np.testing.assert_array_equal(np.asarray(shuffled[:, adata.var_names].X.todense() if storage == "csr"
                                             else shuffled[:, adata.var_names].X), adata.X.toarray())
    shuffled.write_h5ad(tmp_path / "shuffled.h5ad")
    aligned.write_h5ad(tmp_path / "aligned.h5ad")
    got = latents_of(model_dir, tmp_path / "shuffled.h5ad", tmp_path, query(tmp_path / "shuffled.h5ad"), out="a.npz")
    want = latents_of(model_dir, tmp_path / "aligned.h5ad", tmp_path, query(tmp_path / "aligned.h5ad"), out="b.npz")
    for key in want:  # the first layer sums the genes in the file's order: equal to float32 rounding
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5)
    summary = query_summary(query(tmp_path / "shuffled.h5ad"), InferenceModel.load(model_dir).vocabulary)
    assert (summary["genes_in_file"], summary["genes_matched"], summary["genes_dropped"],
            summary["genes_zeroed"]) == (34, 30, 4, 0)


def test_alignment_equals_a_reindex_by_name():
    rng = np.random.default_rng(1)
    model_genes = [f"g{i}" for i in range(12)]
    file_genes = ["x1"] + model_genes[::-1][:9] + ["x2", "x3"]  # g2, g1, g0 missing
    dense = rng.poisson(1.0, (40, len(file_genes))).astype(np.float32)
    reference = pd.DataFrame(dense, columns=file_genes).reindex(columns=model_genes, fill_value=0.0).to_numpy()
    alignment = GeneAlignment(model_genes, file_genes, "test", missing_genes="zero")
    np.testing.assert_array_equal(alignment.matrix(dense), reference)
    np.testing.assert_array_equal(alignment.matrix(sparse.csr_matrix(dense)).toarray(), reference)
    block = sparse.csr_matrix(dense[10:25])
    aligned = alignment.block(RowBlock(10, 25, indptr=block.indptr.astype(np.int64), indices=block.indices,
                                       data=block.data))
    np.testing.assert_array_equal(aligned.to_scipy(12).toarray(), reference[10:25])
    assert list(alignment.missing) == ["g0", "g1", "g2"]


def test_missing_genes_stop_the_run_naming_them_unless_zero(tmp_path, trained):
    model_dir, _, adata = trained
    missing = list(adata.var_names[[3, 7, 8]])
    partial = adata[:, [g for g in adata.var_names if g not in missing]].copy()
    partial.write_h5ad(tmp_path / "partial.h5ad")
    vocabulary = InferenceModel.load(model_dir).vocabulary
    with pytest.raises(InputError, match=r"cpa.query 'lab' .*3 of the model's 30 genes are not in the file's "
                                         r"var_names \(gene0003, gene0007, gene0008\).*missing_genes: zero"):
        query_summary(query(tmp_path / "partial.h5ad"), vocabulary)
    zeroed = adata.copy()
    dense = zeroed.X.toarray()
    dense[:, [3, 7, 8]] = 0
    zeroed.X = sparse.csr_matrix(dense)
    zeroed.write_h5ad(tmp_path / "zeroed.h5ad")
    entry = query(tmp_path / "partial.h5ad", missing_genes="zero")
    assert query_summary(entry, vocabulary)["genes_zeroed"] == 3
    got = latents_of(model_dir, tmp_path / "partial.h5ad", tmp_path, entry, out="a.npz")
    want = latents_of(model_dir, tmp_path / "zeroed.h5ad", tmp_path, query(tmp_path / "zeroed.h5ad"), out="b.npz")
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_genes_matched_by_a_var_column(tmp_path, trained):
    model_dir, _, adata = trained
    renamed = adata.copy()
    renamed.var["symbol"] = list(adata.var_names)
    renamed.var_names = [f"ENSG{i:05d}" for i in range(adata.n_vars)]
    renamed.write_h5ad(tmp_path / "ids.h5ad")
    vocabulary = InferenceModel.load(model_dir).vocabulary
    with pytest.raises(InputError, match="none of the model's 30 genes.*gene_key"):
        query_summary(query(tmp_path / "ids.h5ad"), vocabulary)
    entry = query(tmp_path / "ids.h5ad", gene_key="symbol")
    assert query_summary(entry, vocabulary)["genes_matched"] == 30
    got = latents_of(model_dir, tmp_path / "ids.h5ad", tmp_path, entry, out="a.npz")
    adata.write_h5ad(tmp_path / "same.h5ad")
    want = latents_of(model_dir, tmp_path / "same.h5ad", tmp_path, query(tmp_path / "same.h5ad"), out="b.npz")
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_unknown_category_stops_naming_it_and_a_mapping_reads_it(tmp_path, trained):
    model_dir, _, adata = trained
    lab = adata.copy()
    lab.obs["cell_type"] = lab.obs["cell_type"].astype(str).replace({"type1": "T cell"})
    lab.write_h5ad(tmp_path / "lab.h5ad")
    vocabulary = InferenceModel.load(model_dir).vocabulary
    with pytest.raises(InputError, match=r"cpa.query 'lab' .*obs\['cell_type'\] has the value 'T cell' \(\d+ cells"
                                         r".*not trained on.*covariates: \{cell_type: \{'T cell'"):
        query_summary(query(tmp_path / "lab.h5ad"), vocabulary)
    with pytest.raises(InputError, match="value 'T cell'"):
        latents_of(model_dir, tmp_path / "lab.h5ad", tmp_path, query(tmp_path / "lab.h5ad"))
    adata.write_h5ad(tmp_path / "same.h5ad")
    mapped = latents_of(model_dir, tmp_path / "lab.h5ad", tmp_path,
                        query(tmp_path / "lab.h5ad", covariates={"cell_type": {"T cell": "type1"}}), out="a.npz")
    want = latents_of(model_dir, tmp_path / "same.h5ad", tmp_path, query(tmp_path / "same.h5ad"), out="b.npz")
    for key in want:
        np.testing.assert_array_equal(mapped[key], want[key])


def test_one_category_for_every_cell_where_the_column_is_missing(tmp_path, trained):
    model_dir, _, adata = trained
    lab = adata.copy()
    del lab.obs["cell_type"]
    lab.write_h5ad(tmp_path / "lab.h5ad")
    vocabulary = InferenceModel.load(model_dir).vocabulary
    with pytest.raises(InputError, match=r"obs has no column 'cell_type'.*covariates.cell_type: <category>"):
        query_summary(query(tmp_path / "lab.h5ad"), vocabulary)
    typed = adata.copy()
    typed.obs["cell_type"] = "type2"
    typed.write_h5ad(tmp_path / "typed.h5ad")
    got = latents_of(model_dir, tmp_path / "lab.h5ad", tmp_path,
                     query(tmp_path / "lab.h5ad", covariates={"cell_type": "type2"}), out="a.npz")
    want = latents_of(model_dir, tmp_path / "typed.h5ad", tmp_path, query(tmp_path / "typed.h5ad"), out="b.npz")
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


@pytest.mark.parametrize("change, message", [
    (lambda a: ad.AnnData(sparse.csr_matrix(np.log1p(a.X.toarray())), a.obs, a.var),
     r"cpa.query 'lab' .* holds non-integer values \(first at cell '.*', gene 'gene\d+'\); a count likelihood"),
    (lambda a: a[:0].copy(), "has no cells"),
    (lambda a: ad.AnnData(a.X, a.obs.assign(condition="drug99", dose="1"), a.var),
     r"names the drug\(s\) \['drug99'\], which the model was not trained on"),
    (lambda a: ad.AnnData(a.X, a.obs.drop(columns="dose"), a.var), "perturbed cells .* no dose column 'dose'"),
    (lambda a: ad.AnnData(sparse.csr_matrix(np.c_[np.zeros((a.n_obs, a.n_vars)), np.ones((a.n_obs, 1))]),
                          a.obs, pd.DataFrame(index=list(a.var_names) + ["extra"])),
     r"\(in the model's genes\) has 700 cell\(s\) whose counts are all 0"),
])
def test_queries_the_model_cannot_read_stop_before_inference(tmp_path, trained, change, message):
    model_dir, _, adata = trained
    change(adata.copy()).write_h5ad(tmp_path / "bad.h5ad")
    with pytest.raises(InputError, match=message):
        query_summary(query(tmp_path / "bad.h5ad"), InferenceModel.load(model_dir).vocabulary)


def test_the_training_files_vocabulary_is_the_models(trained):
    model_dir, screen_path, _ = trained
    from_model = InferenceModel.load(model_dir).vocabulary
    from_file = ModelVocabulary.from_training_file(screen_path, CFG)
    np.testing.assert_array_equal(from_file.var_names, from_model.var_names)
    assert from_file.drugs == sorted(from_model.drugs)
    assert from_file.covariate_categories == from_model.covariate_categories
    assert from_file.batch_categories == from_model.batch_categories
    assert from_file.count_data == from_model.count_data


def test_counterfactuals_on_query_controls_equal_predict_in_memory(tmp_path, trained):
    model_dir, _, adata = trained
    controls = adata[adata.obs["condition"] == "control"].copy()
    lab = with_extra_genes(controls)
    lab.obs = lab.obs.drop(columns=["condition", "dose"])  # a lab's own cells: no perturbation column
    lab.obs_names = [f"lab{i}" for i in range(lab.n_obs)]
    lab.write_h5ad(tmp_path / "lab.h5ad")
    predict_counterfactual(model_dir, tmp_path / "lab.h5ad", CFG, "drug00+drug01", "1+0.5", tmp_path / "cf.h5ad",
                           chunk_rows=40, batch_size=16, query=query(tmp_path / "lab.h5ad"))
    result = ad.read_h5ad(tmp_path / "cf.h5ad")
    assert list(result.obs_names) == list(lab.obs_names)
    assert list(result.var_names) == list(adata.var_names)
    assert result.uns["counterfactual"]["query"] == "lab"
    fitted = controls.copy()
    model = CPA.load(str(model_dir), adata=fitted)
    want = model.predict(fitted, perturbation="drug00+drug01", dosage="1+0.5")
    np.testing.assert_allclose(result.X, want, rtol=1e-4, atol=1e-4)


def test_folders_of_other_tools_are_named(tmp_path, trained):
    _, _, adata = trained
    small = adata[:100].copy()
    scvi.model.SCVI.setup_anndata(small)
    scvi.model.SCVI(small, n_latent=2, n_hidden=8).save(str(tmp_path / "scvi"), save_anndata=False)
    with pytest.raises(InputError, match="holds a SCVI model saved by scvi-tools .*not a CPA"):
        InferenceModel.load(tmp_path / "scvi")
    # cpa-tools saves through scvi-tools too, under the model name CPA, with its own data fields.
    saved = torch.load(tmp_path / "scvi" / "model.pt", weights_only=False)
    registry = saved["attr_dict"]["registry_"]
    registry["model_name"] = "CPA"
    registry["setup_args"] = {"perturbation_key": "condition", "is_count_data": True, "deg_uns_key": "rank_genes"}
    registry["field_registries"] = {"X": {}, "perts": {}, "perts_doses": {}, "cell_type": {}}
    (tmp_path / "cpa_tools").mkdir()
    torch.save(saved, tmp_path / "cpa_tools" / "model.pt")
    with pytest.raises(InputError, match=r"a CPA saved by another package, most likely cpa-tools .*'perts'"):
        InferenceModel.load(tmp_path / "cpa_tools")
    (tmp_path / "old").mkdir()
    for name in ("model_params.pt", "attr.pkl", "var_names.csv"):
        (tmp_path / "old" / name).write_bytes(b"")
    with pytest.raises(InputError, match="scvi-tools before 0.15"):
        check_model_folder(tmp_path / "old")
    with pytest.raises(InputError, match="does not exist"):
        check_model_folder(tmp_path / "nowhere")


def test_query_entries_and_counterfactual_targets_are_checked(tmp_path):
    from shardmap.cpa.queries import check_counterfactual_targets, query_entries

    with pytest.raises(InputError, match="cpa.query has two entries named 'lab'"):
        query_entries([{"name": "lab", "adata": "a.h5ad"}, {"name": "lab", "adata": "b.h5ad"}])
    with pytest.raises(InputError, match="the names 'Lab' and 'lab' differ only in upper and lower case"):
        query_entries([{"name": "Lab", "adata": "a.h5ad"}, {"name": "lab", "adata": "b.h5ad"}])
    queries = query_entries([{"name": "lab", "adata": "a.h5ad"}])
    assert queries["lab"]["missing_genes"] == "refuse" and queries["lab"]["covariates"] == {}
    with pytest.raises(InputError, match=r"cpa.counterfactuals\[0\] is on 'labs', which is not the name of a "
                                         r"cpa.query entry \(names: \['lab'\]\)"):
        check_counterfactual_targets([{"perturbation": "drug00", "on": "labs"}], queries, True)
    with pytest.raises(InputError, match="has no `on`, so it would predict the control cells of cpa.adata, which is "
                                         "not set"):
        check_counterfactual_targets([{"perturbation": "drug00"}], queries, False)
    # The sheet form, as a spreadsheet exports it (a trailing empty column, an empty cell).
    (tmp_path / "queries.tsv").write_text("name\tadata\tmissing_genes\t\nlab\tlab.h5ad\t\t\nother\to.h5ad\tzero\t\n")
    sheet = query_entries(str(tmp_path / "queries.tsv"))
    assert [(e["name"], e["adata"], e["missing_genes"]) for e in sheet.values()] == [
        ("lab", "lab.h5ad", "refuse"), ("other", "o.h5ad", "zero")]
    (tmp_path / "bad.tsv").write_text("name\tadata\tmissing_genes\nlab\tlab.h5ad\tdrop\n")
    with pytest.raises(InputError, match=r"cpa.query sheet '.*bad.tsv', line 2: missing_genes 'drop' is not valid"):
        query_entries(str(tmp_path / "bad.tsv"))
