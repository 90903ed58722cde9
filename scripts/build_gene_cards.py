#!/usr/bin/env python
"""Build the offline *gene card* table shipped with genept.

What it makes
-------------
``src/genept/datasets/_data/gene_cards_human.tsv.gz``: one row per human Entrez gene
(all gene types: protein-coding, ncRNA, pseudo, …) with the columns

=============  ==================================================================
entrez_id      NCBI Gene id (int)
symbol         NCBI official symbol
name           full gene name
gene_type      NCBI gene type ("protein-coding", "ncRNA", "pseudo", …)
aliases        '|'-separated alias symbols (org.Hs.eg.db's alias table, which
               holds previous symbols too), the symbol itself excluded; for
               mitochondrial genes the HGNC "MT-" symbols (MT-ND1, MT-CO1, …) that
               single-cell data uses are added, derived from the "MTND1"-style aliases
ensembl        '|'-separated Ensembl gene ids (ENSG…)
chromosome     chromosome ('|'-separated if several)
map_location   cytogenetic band, e.g. "17p13.1"
go_mf          '|'-separated GO term names, molecular function
go_bp          '|'-separated GO term names, biological process
go_cc          '|'-separated GO term names, cellular component
=============  ==================================================================

GO terms are ordered: terms with experimental evidence (EXP, IDA, IPI, IMP, IGI, IEP,
HTP, HDA, HMP, HGI, HEP) first, then curated non-experimental evidence (ISS, IBA, TAS,
NAS, IC, …), then electronic annotation (IEA); within a tier the most specific
terms first, specificity being the number of human genes annotated to the term or
to any of its descendants (fewest first); ``ND`` annotations (to the ontology roots)
are dropped. At most ``--max-terms`` (default 30) terms per ontology are kept.
Rows with a symbol shared by several genes are ordered so that the better
annotated gene (protein-coding first, then most GO terms, then lowest id) comes first.

Where the data comes from
-------------------------
Debian (bookworm) packages, which carry Bioconductor's annotation SQLite databases:

* ``r-bioc-org.hs.eg.db`` 3.16.0-1 — ``org.Hs.eg.sqlite``: NCBI Gene (Entrez Gene
  source date 2022-Sep12), gene-to-GO from NCBI ``gene2go``, Ensembl (2022-Jun28).
* ``r-bioc-go.db`` 3.16.0-1 — ``GO.sqlite``: the Gene Ontology (go-basic.obo of
  2022-07-01): term names and the ancestor/offspring closure.

There is no mouse ``org.Mm.eg.db`` package in Debian, so only the human table is built.

Licences: NCBI Gene data is in the public domain (a work of the US government);
the Gene Ontology and its annotations are CC BY 4.0 (http://geneontology.org/docs/go-citation-policy/:
cite "The Gene Ontology resource: enriching a GOld mine", Nucleic Acids Res. 2021).
The Bioconductor packaging (``org.Hs.eg.db``, ``GO.db``; Marc Carlson) is
Artistic-2.0; only facts derived from the data are redistributed, not the packages.

How to re-run
-------------
On a Debian/Ubuntu machine with the bookworm archive in its sources (no root needed
for ``apt-get download``; run ``apt-get update`` first if the lists are missing)::

    python scripts/build_gene_cards.py --workdir /tmp/gene_cards
    # or, with the two .deb files already downloaded:
    python scripts/build_gene_cards.py --deb-dir /path/to/debs --workdir /tmp/gene_cards

It needs only the standard library and pandas. The output is written with a fixed
gzip timestamp, so re-running on the same packages gives the same bytes (the gzip
header also stores the file name: other names give the same decompressed table).
"""

from __future__ import annotations

import argparse
import glob
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd

PACKAGES = ("r-bioc-org.hs.eg.db", "r-bioc-go.db")
EXPERIMENTAL = frozenset(
    {"EXP", "IDA", "IPI", "IMP", "IGI", "IEP", "HTP", "HDA", "HMP", "HGI", "HEP"}
)
ONTOLOGIES = ("mf", "bp", "cc")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "genept" / "datasets" / "_data" / "gene_cards_human.tsv.gz"


def evidence_tier(code: str) -> int:
    """0: experimental, 1: curated non-experimental, 2: electronic (IEA)."""
    if code in EXPERIMENTAL:
        return 0
    return 2 if code == "IEA" else 1


# ----------------------------------------------------------------------------- fetch


def download_debs(deb_dir: Path) -> None:
    """``apt-get download`` the two packages into ``deb_dir``."""
    deb_dir.mkdir(parents=True, exist_ok=True)
    cmd = ["apt-get", "download", *PACKAGES]
    print("running:", " ".join(cmd), f"(in {deb_dir})", file=sys.stderr)
    subprocess.run(cmd, cwd=deb_dir, check=True)


def extract_debs(deb_dir: Path, workdir: Path) -> Path:
    """``dpkg-deb -x`` every package of :data:`PACKAGES` into ``workdir/root``."""
    root = workdir / "root"
    root.mkdir(parents=True, exist_ok=True)
    for pkg in PACKAGES:
        debs = sorted(glob.glob(str(deb_dir / f"{pkg}_*.deb")))
        if not debs:
            raise FileNotFoundError(f"no {pkg}_*.deb in {deb_dir}; run without --deb-dir")
        subprocess.run(["dpkg-deb", "-x", debs[-1], str(root)], check=True)
        print("extracted", debs[-1], file=sys.stderr)
    return root


def find_sqlite(root: Path, name: str) -> Path:
    hits = sorted(root.rglob(name))
    if not hits:
        raise FileNotFoundError(f"{name} not found under {root}")
    return hits[0]


# ------------------------------------------------------------------------------ read


def read_go_terms(go_sqlite: Path) -> pd.DataFrame:
    """GO id, term name and ontology of every current GO term."""
    with sqlite3.connect(go_sqlite) as con:
        return pd.read_sql("SELECT go_id, term, ontology FROM go_term", con)


def read_genes(org_sqlite: Path) -> pd.DataFrame:
    """One row per Entrez gene: ids, names, type, aliases, Ensembl ids, location."""
    with sqlite3.connect(org_sqlite) as con:
        genes = pd.read_sql(
            """SELECT g._id, CAST(g.gene_id AS INTEGER) AS entrez_id, i.symbol,
                      i.gene_name AS name, t.gene_type
               FROM genes g JOIN gene_info i USING(_id) JOIN genetype t USING(_id)""",
            con,
        )
        alias = pd.read_sql("SELECT _id, alias_symbol AS v FROM alias", con)
        ensembl = pd.read_sql("SELECT _id, ensembl_id AS v FROM ensembl", con)
        chrom = pd.read_sql("SELECT _id, chromosome AS v FROM chromosomes", con)
        band = pd.read_sql("SELECT _id, cytogenetic_location AS v FROM cytogenetic_locations", con)

    genes = genes.set_index("_id")
    symbol = genes["symbol"]
    alias = alias[alias["v"] != symbol.reindex(alias["_id"]).to_numpy()]

    # HGNC "MT-" symbols of mitochondrial genes (single-cell var_names use them)
    mt_ids = set(chrom.loc[chrom["v"] == "MT", "_id"])
    extra = []
    for _id in sorted(mt_ids):
        for a in alias.loc[alias["_id"] == _id, "v"]:
            if a.startswith("MT") and "-" not in a and a[2:3].isupper():
                extra.append((_id, "MT-" + a[2:]))
        s = symbol[_id]
        if s.startswith("TRN"):  # tRNA genes, e.g. TRNF -> MT-TF
            extra.append((_id, "MT-T" + s[3:]))
    alias = pd.concat([alias, pd.DataFrame(extra, columns=["_id", "v"])], ignore_index=True)

    def joined(df: pd.DataFrame) -> pd.Series:
        df = df.drop_duplicates()
        return df.groupby("_id", sort=False)["v"].agg("|".join)

    genes["aliases"] = joined(alias)
    genes["ensembl"] = joined(ensembl.sort_values(["_id", "v"]))
    genes["chromosome"] = joined(chrom)
    genes["map_location"] = joined(band)
    return genes


def read_go_annotations(org_sqlite: Path, go_sqlite: Path) -> pd.DataFrame:
    """Long table of direct GO annotations, one row per (gene, term).

    Columns: ``_id`` (org.Hs.eg.db internal gene key), ``ontology`` ("mf", "bp",
    "cc"), ``go_id``, ``term``, ``tier`` (best evidence tier, see
    :func:`evidence_tier`), ``n_genes`` (genes annotated to the term or a
    descendant), ``n_direct`` (genes annotated directly to the term).
    """
    terms = read_go_terms(go_sqlite).set_index("go_id")
    frames = []
    with sqlite3.connect(org_sqlite) as con:
        for ont in ONTOLOGIES:
            direct = pd.read_sql(f"SELECT _id, go_id, evidence FROM go_{ont}", con)
            n_all = pd.read_sql(
                f"SELECT go_id, COUNT(DISTINCT _id) AS n FROM go_{ont}_all GROUP BY go_id", con
            ).set_index("go_id")["n"]
            direct = direct[direct["evidence"] != "ND"]
            direct["tier"] = direct["evidence"].map(evidence_tier)
            ann = direct.groupby(["_id", "go_id"], as_index=False)["tier"].min()
            ann["ontology"] = ont
            ann["term"] = terms["term"].reindex(ann["go_id"]).to_numpy()
            ann["n_genes"] = n_all.reindex(ann["go_id"]).fillna(1).astype(int).to_numpy()
            ann["n_direct"] = ann.groupby("go_id")["_id"].transform("size")
            frames.append(ann.dropna(subset=["term"]))
    return pd.concat(frames, ignore_index=True)


def order_annotations(ann: pd.DataFrame) -> pd.DataFrame:
    """Sort: gene, ontology, evidence tier, specificity (fewest genes first), name."""
    return ann.sort_values(["_id", "ontology", "tier", "n_genes", "term"], kind="stable")


# ----------------------------------------------------------------------------- build


def build_table(org_sqlite: Path, go_sqlite: Path, *, max_terms: int = 30) -> pd.DataFrame:
    genes = read_genes(org_sqlite)
    ann = order_annotations(read_go_annotations(org_sqlite, go_sqlite))
    n_go = ann.groupby("_id").size()
    ann = ann.groupby(["_id", "ontology"], sort=False).head(max_terms)
    for ont in ONTOLOGIES:
        sub = ann[ann["ontology"] == ont]
        genes[f"go_{ont}"] = sub.groupby("_id", sort=False)["term"].agg("|".join)

    # preferred gene of a shared symbol first: protein-coding, best annotated, lowest id
    genes["_pc"] = genes["gene_type"] != "protein-coding"
    genes["_ngo"] = -n_go.reindex(genes.index).fillna(0)
    genes = genes.sort_values(["symbol", "_pc", "_ngo", "entrez_id"], kind="stable")
    cols = [
        "entrez_id", "symbol", "name", "gene_type", "aliases", "ensembl",
        "chromosome", "map_location", "go_mf", "go_bp", "go_cc",
    ]  # fmt: skip
    return genes[cols].reset_index(drop=True)


def write_table(table: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(
        out,
        sep="\t",
        index=False,
        compression={"method": "gzip", "compresslevel": 9, "mtime": 0},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .tsv.gz")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "genept_gene_cards",
        help="scratch folder for the downloaded and extracted packages",
    )
    parser.add_argument(
        "--deb-dir", type=Path, default=None, help="folder with the two .deb already downloaded"
    )
    parser.add_argument("--max-terms", type=int, default=30, help="GO terms kept per ontology")
    args = parser.parse_args(argv)

    deb_dir = args.deb_dir
    if deb_dir is None:
        deb_dir = args.workdir / "debs"
        download_debs(deb_dir)
    root = extract_debs(deb_dir, args.workdir)
    org = find_sqlite(root, "org.Hs.eg.sqlite")
    go = find_sqlite(root, "GO.sqlite")
    table = build_table(org, go, max_terms=args.max_terms)
    write_table(table, args.out)
    print(
        f"wrote {args.out}: {len(table)} genes, {args.out.stat().st_size / 1e6:.2f} MB",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
