"""Clinical vocabularies of the generated region: ICD-10 diagnoses, LOINC vitals and labs (UCUM), ATC medicines.

Codes are real (ICD-10 WHO 2019, LOINC 2.7x, UCUM, ATC/DDD 2024); displays are the Chinese terms used in Guangxi
hospitals' records. Weights are rough prevalences in an ageing, rural-heavy population.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ATC",
    "DIAGNOSES",
    "ICD10",
    "LABS",
    "LOINC",
    "MEDICINES",
    "UCUM",
    "VITALS",
    "Diagnosis",
    "Measure",
    "Medicine",
]

ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ATC = "http://www.whocc.no/atc"


@dataclass(frozen=True)
class Diagnosis:
    code: str
    display: str
    weight: int
    chronic: bool
    medicines: tuple[str, ...] = ()
    labs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Measure:
    """A quantitative observation: LOINC code, UCUM unit, and a normal mean and spread."""

    code: str
    display: str
    text: str
    unit: str
    ucum: str
    mean: float
    sd: float
    decimals: int = 0
    category: str = "vital-signs"


@dataclass(frozen=True)
class Medicine:
    atc: str
    display: str
    dose: str


DIAGNOSES = (
    Diagnosis("I10", "特发性（原发性）高血压", 30, True, ("C08CA01", "C09CA01"), ("2093-3",)),
    Diagnosis("E11.9", "2型糖尿病，不伴有并发症", 14, True, ("A10BA02",), ("1558-6", "4548-4")),
    Diagnosis("E78.5", "高脂血症", 8, True, ("C10AA05",), ("2093-3",)),
    Diagnosis("I25.1", "动脉硬化性心脏病", 6, True, ("B01AC06", "C10AA05"), ("2093-3",)),
    Diagnosis("J44.9", "慢性阻塞性肺病", 5, True, ("R03AK06",)),
    Diagnosis("N18.9", "慢性肾脏病", 3, True, (), ("14682-9",)),
    Diagnosis("I63.9", "脑梗死", 3, True, ("B01AC06",)),
    Diagnosis("J06.9", "急性上呼吸道感染", 14, False, ("J01CA04",), ("718-7",)),
    Diagnosis("K29.7", "胃炎", 7, False, ("A02BC01",)),
    Diagnosis("M54.5", "下背痛", 6, False, ("M01AE01",)),
    Diagnosis("J18.9", "肺炎", 3, False, ("J01DD04",), ("718-7",)),
    Diagnosis("A09.9", "胃肠炎和结肠炎", 4, False, ("A07BA01",)),
)

VITALS = {
    "8867-4": Measure("8867-4", "Heart rate", "心率", "次/分", "/min", 76, 11),
    "8310-5": Measure("8310-5", "Body temperature", "体温", "℃", "Cel", 36.7, 0.4, 1),
    "29463-7": Measure("29463-7", "Body weight", "体重", "kg", "kg", 60, 10, 1),
    "8302-2": Measure("8302-2", "Body height", "身高", "cm", "cm", 161, 8),
    "59408-5": Measure(
        "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "血氧饱和度", "%", "%", 97, 1.5
    ),
}
"""Vital signs besides blood pressure (85354-9 with 8480-6 / 8462-4 components, in mm[Hg])."""

LABS = {
    "1558-6": Measure(
        "1558-6",
        "Fasting glucose [Moles/volume] in Serum or Plasma",
        "空腹血糖",
        "mmol/L",
        "mmol/L",
        6.2,
        1.6,
        1,
        "laboratory",
    ),
    "4548-4": Measure(
        "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "糖化血红蛋白", "%", "%", 6.6, 1.1, 1, "laboratory"
    ),
    "2093-3": Measure(
        "2093-3",
        "Cholesterol [Moles/volume] in Serum or Plasma",
        "总胆固醇",
        "mmol/L",
        "mmol/L",
        5.0,
        0.9,
        2,
        "laboratory",
    ),
    "14682-9": Measure(
        "14682-9", "Creatinine [Moles/volume] in Serum or Plasma", "肌酐", "μmol/L", "umol/L", 82, 25, 0, "laboratory"
    ),
    "718-7": Measure("718-7", "Hemoglobin [Mass/volume] in Blood", "血红蛋白", "g/L", "g/L", 132, 15, 0, "laboratory"),
}

MEDICINES = {
    m.atc: m
    for m in (
        Medicine("C08CA01", "苯磺酸氨氯地平片 5mg", "每日一次，每次5mg，口服"),
        Medicine("C09CA01", "氯沙坦钾片 50mg", "每日一次，每次50mg，口服"),
        Medicine("A10BA02", "盐酸二甲双胍片 0.5g", "每日三次，每次0.5g，餐后口服"),
        Medicine("C10AA05", "阿托伐他汀钙片 20mg", "每晚一次，每次20mg，口服"),
        Medicine("B01AC06", "阿司匹林肠溶片 100mg", "每日一次，每次100mg，口服"),
        Medicine("R03AK06", "沙美特罗替卡松吸入粉雾剂", "每日两次，每次一吸"),
        Medicine("J01CA04", "阿莫西林胶囊 0.25g", "每日三次，每次0.5g，口服，连用5天"),
        Medicine("A02BC01", "奥美拉唑肠溶胶囊 20mg", "每日一次，每次20mg，早餐前口服"),
        Medicine("M01AE01", "布洛芬缓释胶囊 0.3g", "每日两次，每次0.3g，口服"),
        Medicine("J01DD04", "注射用头孢曲松钠 1g", "每日一次，每次2g，静脉滴注"),
        Medicine("A07BA01", "蒙脱石散 3g", "每日三次，每次3g，冲服"),
    )
}
