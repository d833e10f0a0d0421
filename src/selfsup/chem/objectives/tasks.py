"""The 20 GuacaMol v2 goal-directed tasks and the PMO extras that need no downloaded model.

Each task is built from its published definition (Brown et al., "GuacaMol: benchmarking models
for de novo molecular design", J. Chem. Inf. Model. 2019; the v2 suite used by GEGL; PMO, Gao
et al. NeurIPS 2022 Datasets & Benchmarks): target molecules, fingerprint types, modifiers,
means, and the top-k specification of the benchmark score (mean of top-1/10/100, top-1 for
rediscovery, top-159 / top-250 for the isomer tasks).

All tasks score invalid SMILES as 0.0 here (GuacaMol's own functions return -1.0).
"""

from __future__ import annotations

from collections.abc import Callable

from rdkit import Chem
from rdkit.Chem import Descriptors, rdMolDescriptors

from selfsup.chem.molecules import mol_from_smiles_strict
from selfsup.chem.objectives.base import (
    ArithmeticMean,
    DescriptorTerm,
    GeometricMean,
    IsomerTerm,
    Objective,
    SmartsTerm,
    TanimotoTerm,
    TaskObjective,
    TopKSpec,
)
from selfsup.chem.objectives.modifiers import ClippedScore, Gaussian, MaxGaussian, MinGaussian
from selfsup.chem.objectives.properties import qed

__all__ = ["GUACAMOL_V2_TASKS", "PMO_TASKS", "TASK_BUILDERS", "TARGETS"]

TOP_1_10_100 = TopKSpec((1, 10, 100))
TOP_1 = TopKSpec((1,))

#: Target molecules of the tasks (SMILES as written in the GuacaMol v2 definitions).
TARGETS: dict[str, str] = {
    "celecoxib": "CC1=CC=C(C=C1)C1=CC(=NN1C1=CC=C(C=C1)S(N)(=O)=O)C(F)(F)F",
    "troglitazone": "Cc1c(C)c2OC(C)(COc3ccc(CC4SC(=O)NC4=O)cc3)CCc2c(C)c1O",
    "thiothixene": "CN(C)S(=O)(=O)c1ccc2Sc3ccccc3C(=CCCN4CCN(C)CC4)c2c1",
    "aripiprazole": "Clc4cccc(N3CCN(CCCCOc2ccc1c(NC(=O)CC1)c2)CC3)c4Cl",
    "albuterol": "CC(C)(C)NCC(O)c1ccc(O)c(CO)c1",
    "mestranol": "COc1ccc2[C@H]3CC[C@@]4(C)[C@@H](CC[C@@]4(O)C#C)[C@@H]3CCc2c1",
    "camphor": "CC1(C)C2CCC1(C)C(=O)C2",
    "menthol": "CC(C)C1CCC(C)CC1O",
    "tadalafil": "O=C1N(CC(N2C1CC3=C(C2C4=CC5=C(OCO5)C=C4)NC6=C3C=CC=C6)=O)C",
    "sildenafil": "CCCC1=NN(C2=C1N=C(NC2=O)C3=C(C=CC(=C3)S(=O)(=O)N4CCN(CC4)C)OCC)C",
    "osimertinib": "COc1cc(N(C)CCN(C)C)c(NC(=O)C=C)cc1Nc2nccc(n2)c3cn(C)c4ccccc34",
    "fexofenadine": "CC(C)(C(=O)O)c1ccc(cc1)C(O)CCCN2CCC(CC2)C(O)(c3ccccc3)c4ccccc4",
    "ranolazine": "COc1ccccc1OCC(O)CN2CCN(CC(=O)Nc3c(C)cccc3C)CC2",
    "perindopril": "O=C(OCC)C(NC(C(=O)N1C(C(=O)O)CC2CCCCC12)C)CCC",
    "amlodipine": r"Clc1ccccc1C2C(=C(/N/C(=C2/C(=O)OCC)COCCN)C)\C(=O)OC",
    "sitagliptin": "Fc1cc(c(F)cc1F)CC(N)CC(=O)N3Cc2nnc(n2CC3)C(F)(F)F",
    # Valsartan SMARTS takes its property targets from this second writing of sitagliptin
    "sitagliptin_valsartan": "NC(CC(=O)N1CCn2c(nnc2C(F)(F)F)C1)Cc1cc(F)c(F)cc1F",
    "zaleplon": "O=C(C)N(CC)C1=CC=CC(C2=CC=NC3=C(C=NN23)C#N)=C1",
    "hop_start": "CCCOc1cc2ncnc(Nc3ccc4ncsc4c3)c2cc1S(=O)(=O)C(C)(C)C",
}

VALSARTAN_SMARTS = "CN(C=O)Cc1ccc(c2ccccc2)cc1"
HOP_SCAFFOLD_SMARTS = "[#7]-c1n[c;h1]nc2[c;h1]c(-[#8])[c;h0][c;h1]c12"
HOP_DECO_SMARTS = "[#6]-[#6]-[#6]-[#8]-[#6]~[#6]~[#6]~[#6]~[#6]-[#7]-c1ccc2ncsc2c1"


# ------------------------------------------------------------------------------ descriptors
def _logp(mol: Chem.Mol) -> float:
    return float(Descriptors.MolLogP(mol))


def _tpsa(mol: Chem.Mol) -> float:
    return float(Descriptors.TPSA(mol))


def _bertz(mol: Chem.Mol) -> float:
    return float(Descriptors.BertzCT(mol))


def _num_rings(mol: Chem.Mol) -> float:
    return float(rdMolDescriptors.CalcNumRings(mol))


def _num_aromatic_rings(mol: Chem.Mol) -> float:
    return float(rdMolDescriptors.CalcNumAromaticRings(mol))


def _num_fluorine(mol: Chem.Mol) -> float:
    return float(sum(1 for a in mol.GetAtoms() if a.GetSymbol() == "F"))


# ---------------------------------------------------------------------------------- builders
def _similarity_task(name: str, display: str, target: str, fp_type: str, threshold: float,
                     rediscovery: bool) -> TaskObjective:
    term = TanimotoTerm(TARGETS[target], fp_type, ClippedScore(upper_x=threshold))
    return TaskObjective(name, display, term, TOP_1 if rediscovery else TOP_1_10_100,
                         description=f"{fp_type} Tanimoto to {target}, clipped at {threshold}")


def celecoxib_rediscovery() -> TaskObjective:
    return _similarity_task("celecoxib_rediscovery", "Celecoxib rediscovery", "celecoxib",
                            "ECFP4", 1.0, True)


def troglitazone_rediscovery() -> TaskObjective:
    return _similarity_task("troglitazone_rediscovery", "Troglitazone rediscovery",
                            "troglitazone", "ECFP4", 1.0, True)


def thiothixene_rediscovery() -> TaskObjective:
    return _similarity_task("thiothixene_rediscovery", "Thiothixene rediscovery", "thiothixene",
                            "ECFP4", 1.0, True)


def aripiprazole_similarity() -> TaskObjective:
    return _similarity_task("aripiprazole_similarity", "Aripiprazole similarity", "aripiprazole",
                            "ECFP4", 0.75, False)


def albuterol_similarity() -> TaskObjective:
    return _similarity_task("albuterol_similarity", "Albuterol similarity", "albuterol",
                            "FCFP4", 0.75, False)


def mestranol_similarity() -> TaskObjective:
    return _similarity_task("mestranol_similarity", "Mestranol similarity", "mestranol", "AP",
                            0.75, False)


def isomers_c11h24() -> TaskObjective:
    return TaskObjective("isomers_c11h24", "C11H24", IsomerTerm("C11H24"), TopKSpec((159,)),
                         description="isomers of C11H24 (159 exist without stereo)")


def isomers_c9h10n2o2pf2cl() -> TaskObjective:
    return TaskObjective("isomers_c9h10n2o2pf2cl", "C9H10N2O2PF2Cl", IsomerTerm("C9H10N2O2PF2Cl"),
                         TopKSpec((250,)), description="isomers of C9H10N2O2PF2Cl")


def isomers_c7h8n2o2() -> TaskObjective:
    return TaskObjective("isomers_c7h8n2o2", "C7H8N2O2", IsomerTerm("C7H8N2O2"), TopKSpec((100,)),
                         source="PMO", description="isomers of C7H8N2O2")


def median1() -> TaskObjective:
    term = GeometricMean([TanimotoTerm(TARGETS["menthol"], "ECFP4"),
                          TanimotoTerm(TARGETS["camphor"], "ECFP4")])
    return TaskObjective("median1", "Median molecules 1", term, TOP_1_10_100,
                         description="geometric mean of ECFP4 similarity to camphor and menthol")


def median2() -> TaskObjective:
    term = GeometricMean([TanimotoTerm(TARGETS["tadalafil"], "ECFP6"),
                          TanimotoTerm(TARGETS["sildenafil"], "ECFP6")])
    return TaskObjective("median2", "Median molecules 2", term, TOP_1_10_100,
                         description="geometric mean of ECFP6 similarity to tadalafil, sildenafil")


def osimertinib_mpo() -> TaskObjective:
    t = TARGETS["osimertinib"]
    term = GeometricMean([
        TanimotoTerm(t, "FCFP4", ClippedScore(upper_x=0.8)),
        TanimotoTerm(t, "ECFP6", MinGaussian(0.85, 0.1)),
        DescriptorTerm(_tpsa, MaxGaussian(100.0, 10.0), name="tpsa"),
        DescriptorTerm(_logp, MinGaussian(1.0, 1.0), name="logp"),
    ])
    return TaskObjective("osimertinib_mpo", "Osimertinib MPO", term, TOP_1_10_100)


def fexofenadine_mpo() -> TaskObjective:
    term = GeometricMean([
        TanimotoTerm(TARGETS["fexofenadine"], "AP", ClippedScore(upper_x=0.8)),
        DescriptorTerm(_tpsa, MaxGaussian(90.0, 10.0), name="tpsa"),
        DescriptorTerm(_logp, MinGaussian(4.0, 1.0), name="logp"),
    ])
    return TaskObjective("fexofenadine_mpo", "Fexofenadine MPO", term, TOP_1_10_100)


def ranolazine_mpo() -> TaskObjective:
    term = GeometricMean([
        TanimotoTerm(TARGETS["ranolazine"], "AP", ClippedScore(upper_x=0.7)),
        DescriptorTerm(_logp, MaxGaussian(7.0, 1.0), name="logp"),
        DescriptorTerm(_num_fluorine, Gaussian(1.0, 1.0), name="n_fluorine"),
        DescriptorTerm(_tpsa, MaxGaussian(95.0, 20.0), name="tpsa"),
    ])
    return TaskObjective("ranolazine_mpo", "Ranolazine MPO", term, TOP_1_10_100)


def perindopril_mpo() -> TaskObjective:
    term = GeometricMean([
        TanimotoTerm(TARGETS["perindopril"], "ECFP4"),
        DescriptorTerm(_num_aromatic_rings, Gaussian(2.0, 0.5), name="n_aromatic_rings"),
    ])
    return TaskObjective("perindopril_mpo", "Perindopril MPO", term, TOP_1_10_100)


def amlodipine_mpo() -> TaskObjective:
    term = GeometricMean([
        TanimotoTerm(TARGETS["amlodipine"], "ECFP4"),
        DescriptorTerm(_num_rings, Gaussian(3.0, 0.5), name="n_rings"),
    ])
    return TaskObjective("amlodipine_mpo", "Amlodipine MPO", term, TOP_1_10_100)


def sitagliptin_mpo() -> TaskObjective:
    t = TARGETS["sitagliptin"]
    ref = mol_from_smiles_strict(t)
    term = GeometricMean([
        TanimotoTerm(t, "ECFP4", Gaussian(0.0, 0.1)),
        DescriptorTerm(_logp, Gaussian(_logp(ref), 0.2), name="logp"),
        DescriptorTerm(_tpsa, Gaussian(_tpsa(ref), 5.0), name="tpsa"),
        IsomerTerm("C16H15F6N5O"),
    ])
    return TaskObjective("sitagliptin_mpo", "Sitagliptin MPO", term, TOP_1_10_100)


def zaleplon_mpo() -> TaskObjective:
    term = GeometricMean([TanimotoTerm(TARGETS["zaleplon"], "ECFP4"), IsomerTerm("C19H17N3O2")])
    return TaskObjective("zaleplon_mpo", "Zaleplon MPO", term, TOP_1_10_100)


def valsartan_smarts() -> TaskObjective:
    ref = mol_from_smiles_strict(TARGETS["sitagliptin_valsartan"])
    term = GeometricMean([
        SmartsTerm(VALSARTAN_SMARTS),
        DescriptorTerm(_logp, Gaussian(_logp(ref), 0.2), name="logp"),
        DescriptorTerm(_tpsa, Gaussian(_tpsa(ref), 5.0), name="tpsa"),
        DescriptorTerm(_bertz, Gaussian(_bertz(ref), 30.0), name="bertz"),
    ])
    return TaskObjective("valsartan_smarts", "Valsartan SMARTS", term, TOP_1_10_100)


def deco_hop() -> TaskObjective:
    term = ArithmeticMean([
        TanimotoTerm(TARGETS["hop_start"], "PHCO", ClippedScore(upper_x=0.85)),
        SmartsTerm("CS([#6])(=O)=O", inverse=True),
        SmartsTerm("[#7]-c1ccc2ncsc2c1", inverse=True),
        SmartsTerm(HOP_SCAFFOLD_SMARTS),
    ])
    return TaskObjective("deco_hop", "Deco Hop", term, TOP_1_10_100)


def scaffold_hop() -> TaskObjective:
    term = ArithmeticMean([
        TanimotoTerm(TARGETS["hop_start"], "PHCO", ClippedScore(upper_x=0.75)),
        SmartsTerm(HOP_DECO_SMARTS),
        SmartsTerm(HOP_SCAFFOLD_SMARTS, inverse=True),
    ])
    return TaskObjective("scaffold_hop", "Scaffold Hop", term, TOP_1_10_100)


def qed_task() -> TaskObjective:
    return TaskObjective("qed", "QED", DescriptorTerm(qed, name="qed"), TOP_1_10_100,
                         source="PMO")


#: Registry key -> builder, GuacaMol v2 suite order first.
TASK_BUILDERS: dict[str, Callable[[], Objective]] = {
    f.__name__: f
    for f in (
        celecoxib_rediscovery, troglitazone_rediscovery, thiothixene_rediscovery,
        aripiprazole_similarity, albuterol_similarity, mestranol_similarity,
        isomers_c11h24, isomers_c9h10n2o2pf2cl, median1, median2,
        osimertinib_mpo, fexofenadine_mpo, ranolazine_mpo, perindopril_mpo, amlodipine_mpo,
        sitagliptin_mpo, zaleplon_mpo, valsartan_smarts, deco_hop, scaffold_hop,
        isomers_c7h8n2o2,
    )
}
TASK_BUILDERS["qed"] = qed_task

#: The 20 GuacaMol v2 goal-directed tasks, in the suite's order.
GUACAMOL_V2_TASKS: tuple[str, ...] = tuple(list(TASK_BUILDERS)[:20])

#: The PMO oracles reachable without a downloaded classifier (PMO's 23 minus DRD2, GSK3B, JNK3).
PMO_TASKS: tuple[str, ...] = (
    "albuterol_similarity", "amlodipine_mpo", "celecoxib_rediscovery", "deco_hop",
    "fexofenadine_mpo", "isomers_c7h8n2o2", "isomers_c9h10n2o2pf2cl", "median1", "median2",
    "mestranol_similarity", "osimertinib_mpo", "perindopril_mpo", "qed", "ranolazine_mpo",
    "scaffold_hop", "sitagliptin_mpo", "thiothixene_rediscovery", "troglitazone_rediscovery",
    "valsartan_smarts", "zaleplon_mpo",
)
