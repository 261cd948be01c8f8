"""A labelled, seed-deterministic synthetic MPI test set: Wuzhou residents and the records institutions hold.

Residents live in households (shared address and landline, parents' phones, twins); each resident has one to four
Patient records from different institutions, each written with realistic errors. Labels say who is who.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from pypinyin import lazy_pinyin

from ehr_archive.identifiers import (
    CITIZEN_CARD_SYSTEM,
    NCMS_CARD_SYSTEM,
    RESIDENT_ID_SYSTEM,
    SOCIAL_SECURITY_CARD_SYSTEM,
    mrn_system,
    resident_id_check_char,
)
from ehr_archive.matching import (
    DEFAULT_MODEL,
    DEFAULT_THRESHOLDS,
    MatchGrade,
    MatchModel,
    Thresholds,
    candidate_pairs,
    person_record_from_patient,
    score_pair,
)
from ehr_archive.matching.chinese import TRADITIONAL_TO_SIMPLIFIED, fuzzy_syllable

__all__ = ["LabelledRecord", "LinkageQuality", "MpiDataset", "Resident", "evaluate_linkage", "generate_dataset"]

REFERENCE_DAY = date(2025, 6, 30)

# Surnames weighted towards eastern Guangxi (黄、李、陈、梁 lead; 莫、韦、覃、蒙 are common Zhuang surnames).
_SURNAMES = (
    "黄80 李70 陈70 梁50 刘40 莫30 韦30 林30 何30 张30 王30 覃25 周25 罗25 吴25 杨25 谢20 钟20 邓20 苏15 "
    "卢15 冯15 蒙12 陆12 廖12 潘12 唐12 曾12 麦10 甘10 蒋10 彭10 胡10 赖10 朱10 徐10 欧8 关8 邱8 龙8 江8 "
    "郭8 郑8 叶8 岑6 孙6 马6 高6 许6 余6 蔡6 伍5 庞5 温5 邹5 区4 冼4 宋4 严3 劳3 骆3 韩3 单1 欧阳2 司马1"
)
_MALE = (
    "伟强军明华勇杰涛斌磊超辉鹏飞刚平东海波建国志文荣新永庆家俊豪宇浩轩子晨博"
    "铭鑫宏德福贵祥林峰成广昌瑞金龙健锋宁安泽睿天毅诚振兴旺发才"
)
_FEMALE = "芳丽娟敏静燕艳玲霞红梅英兰琳婷雪慧莉萍晶洁颖倩欣怡佳悦琪思雨诗涵梦嘉秀凤春月美珍桂群莹薇娜丹妮"
_POOL = (
    "为卫维未位委威微唯玮炜苇韦名鸣铭茗民化话画花骅桦立力利丽莉俐励荔黎李理礼方芳坊房仿红宏洪虹鸿弘泓军君均俊骏峻"
    "静晶精京经景婧菁英樱莹盈颖影玲琳林霖凌陵灵岭龄伶勇永泳咏涌杰洁结捷燕艳雁岩言严延颜妍彦梅美玫媚枚眉海凯开楷恺"
    "刚纲钢岗港平萍评苹凭屏坪东冬栋董文闻雯纹志智芝知枝之致至国郭辉晖慧惠会汇回徽强墙蔷鹏朋彭蓬飞非菲霏妃斐涛桃陶"
    "滔韬波博伯柏勃磊雷蕾超潮朝新心欣馨辛信星兴行形幸雪学薛婷庭亭廷挺霆丹单月越悦跃粤岳乐怡宜仪艺义易亿忆益毅翼佳"
    "家嘉加夏霞侠思斯丝司诗师施时实世市仕春纯淳醇秀修宇雨语羽玉育誉豫郁浩豪好昊皓轩宣萱玄鑫金今津锦进晋泽则哲真珍"
    "振震贞祯睿瑞锐蕊芮天田甜恬诚成城承呈程澄盛胜圣生声升笙祥翔香湘晨辰臣陈琛宁凝娜纳那妮尼倪霓伦龙隆玲能农浓兰岚"
)

# Townships (镇、乡、街道) of Wuzhou's county-level divisions, by GB/T 2260 code and relative population.
_DISTRICTS = {
    "450403": ("万秀区", 12, "城东街道 城中街道 城南街道 城北街道 角嘴街道 东兴街道 城东镇 龙湖镇 夏郢镇"),
    "450405": ("长洲区", 8, "大塘街道 兴龙街道 红岭街道 长洲镇 倒水镇"),
    "450406": ("龙圩区", 8, "龙圩镇 大坡镇 广平镇 新地镇"),
    "450421": ("苍梧县", 10, "石桥镇 沙头镇 梨埠镇 岭脚镇 京南镇 狮寨镇 旺甫镇 六堡镇"),
    "450422": (
        "藤县",
        28,
        "藤州镇 塘步镇 琅南镇 同心镇 金鸡镇 新庆镇 象棋镇 岭景镇 天平镇 濛江镇 和平镇 太平镇 古龙镇 东荣镇",
    ),
    "450423": ("蒙山县", 7, "蒙山镇 西河镇 新圩镇 文圩镇 黄村镇 陈塘镇 汉豪乡 长坪瑶族乡 夏宜瑶族乡"),
    "450481": (
        "岑溪市",
        27,
        "岑城镇 糯垌镇 诚谏镇 归义镇 筋竹镇 大业镇 梨木镇 大隆镇 南渡镇 马路镇 三堡镇 波塘镇 安平镇",
    ),
}
_URBAN = ("450403", "450405")
_LEGACY_CODES = {"450422": "452423", "450423": "452425", "450481": "452421"}
_MIGRANT_CODES = ("450102", "450103", "450902", "452402", "440103", "441202", "440606", "445302", "430105")
_VILLAGE_HEAD = "新大长石黄龙上下东西南北平安和太古金福兴白马"
_VILLAGE_TAIL = "安田塘桥坪岭洞江河山口冲垌岗湾寨村竹"
_MOBILE_PREFIXES = ("130", "131", "132", "135", "136", "137", "138", "139", "150", "152", "155", "158", "159",
                    "177", "180", "182", "185", "186", "187", "188", "189", "199")  # fmt: skip
_INSTITUTIONS = tuple(f"wz-org-{n:03d}" for n in range(1, 41))
_TO_TRADITIONAL = {simple: traditional for traditional, simple in reversed(TRADITIONAL_TO_SIMPLIFIED.items())}
_CARD_SYSTEMS = {
    "ncms-card": NCMS_CARD_SYSTEM,
    "social-security-card": SOCIAL_SECURITY_CARD_SYSTEM,
    "citizen-card": CITIZEN_CARD_SYSTEM,
}
Villages = dict[tuple[str, str], list[str]]


@dataclass
class Resident:
    """One real person: the truth every record of them is a noisy copy of."""

    person_id: str
    surname: str
    given: str
    sex: str
    birth_date: date
    resident_id: str
    district: str
    township: str
    village: str
    house: str
    phones: list[str] = field(default_factory=list)
    family_phones: list[str] = field(default_factory=list)
    cards: dict[str, str] = field(default_factory=dict)
    twin_of: str | None = None


@dataclass(frozen=True)
class LabelledRecord:
    """A Patient record as one institution holds it, labelled with the person it is and the errors in it."""

    record_id: str
    person_id: str
    patient: dict[str, Any]
    errors: tuple[str, ...]


@dataclass(frozen=True)
class MpiDataset:
    residents: tuple[Resident, ...]
    records: tuple[LabelledRecord, ...]

    def true_pairs(self) -> set[tuple[int, int]]:
        """Index pairs (i < j) of records of the same person."""
        by_person: defaultdict[str, list[int]] = defaultdict(list)
        for index, record in enumerate(self.records):
            by_person[record.person_id].append(index)
        return {(x, y) for members in by_person.values() for i, x in enumerate(members) for y in members[i + 1 :]}


class _Names:
    """Name characters and their homophones (same toneless pinyin) and southern near-homophones."""

    def __init__(self) -> None:
        pool = list(dict.fromkeys(_POOL + _MALE + _FEMALE))
        self.sound = {ch: lazy_pinyin(ch)[0] for ch in pool}
        self.homophones: defaultdict[str, list[str]] = defaultdict(list)
        self.fuzzy: defaultdict[str, list[str]] = defaultdict(list)
        for ch in pool:
            self.homophones[self.sound[ch]].append(ch)
            self.fuzzy[fuzzy_syllable(self.sound[ch])].append(ch)
        self.surnames: list[str] = []
        self.weights: list[int] = []
        for entry in _SURNAMES.split():
            self.surnames.append(entry.rstrip("0123456789"))
            self.weights.append(int(entry[len(self.surnames[-1]) :]))

    def homophone(self, rng: random.Random, ch: str) -> str | None:
        options = [c for c in self.homophones.get(self.sound.get(ch, ""), []) if c != ch]
        return rng.choice(options) if options else None

    def near_homophone(self, rng: random.Random, ch: str) -> str | None:
        sound = self.sound.get(ch, "")
        options = [c for c in self.fuzzy.get(fuzzy_syllable(sound), []) if self.sound[c] != sound]
        return rng.choice(options) if options else None


def generate_dataset(*, residents: int = 20_000, seed: int = 0) -> MpiDataset:
    """Generate `residents` people in households and 1–4 noisy Patient records of each; same seed, same set."""
    rng = random.Random(seed)
    names = _Names()
    villages = {
        (code, town): [_village_name(rng, town) for _ in range(rng.randint(5, 12))]
        for code, (_, _, towns) in _DISTRICTS.items()
        for town in towns.split()
    }
    used: set[str] = set()
    people: list[Resident] = []
    while len(people) < residents:
        people.extend(_household(rng, names, villages, used, len(people)))
    people = people[:residents]
    records: list[LabelledRecord] = []
    for person in people:
        count = rng.choices((1, 2, 3, 4), weights=(62, 24, 10, 4))[0]
        for org in rng.sample(_INSTITUTIONS, count):
            records.append(_record(rng, names, villages, person, org, f"r{len(records):06d}", used))
    rng.shuffle(records)
    return MpiDataset(tuple(people), tuple(records))


def _unique(rng: random.Random, used: set[str], make: Callable[[random.Random], str]) -> str:
    while True:
        value = make(rng)
        if value not in used:
            used.add(value)
            return value


def _village_name(rng: random.Random, township: str) -> str:
    suffix = "社区" if township.endswith("街道") else "村"
    return rng.choice(_VILLAGE_HEAD) + rng.choice(_VILLAGE_TAIL) + suffix


def _mobile(rng: random.Random) -> str:
    return rng.choice(_MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}"


def _household(rng: random.Random, names: _Names, villages: Villages, used: set[str], start: int) -> list[Resident]:
    codes = list(_DISTRICTS)
    district = rng.choices(codes, weights=[_DISTRICTS[c][1] for c in codes])[0]
    township = rng.choice(_DISTRICTS[district][2].split())
    village = rng.choice(villages[(district, township)])
    house = f"{rng.randint(1, 180)}号"
    landline = [_unique(rng, used, lambda r: f"0774{r.randrange(10**7):07d}")] if rng.random() < 0.3 else []
    family_name = rng.choices(names.surnames, weights=names.weights)[0]
    kind = rng.choices(("single", "couple", "parents", "three"), weights=(10, 15, 45, 30))[0]
    father_year = rng.randint(1938, 1972) if kind in ("single", "couple") else rng.randint(1955, 1998)
    members: list[tuple[str, str, int, str | None]] = []  # surname, sex, birth year, twin group
    if kind == "single":
        members.append((family_name, rng.choice(("male", "female")), father_year, None))
    else:
        members.append((family_name, "male", father_year, None))
        members.append((rng.choices(names.surnames, weights=names.weights)[0], "female",
                        father_year + rng.randint(-2, 5), None))  # fmt: skip
    if kind == "three":
        members.append((family_name, "male", father_year - rng.randint(22, 32), None))
        members.append((rng.choices(names.surnames, weights=names.weights)[0], "female",
                        father_year - rng.randint(20, 30), None))  # fmt: skip
    first_child = len(members)
    if kind in ("parents", "three"):
        year = father_year + rng.randint(21, 30)
        for child in range(rng.choices((1, 2, 3), weights=(45, 40, 15))[0]):
            if year > REFERENCE_DAY.year - 1:
                break
            twins = 2 if rng.random() < 0.05 else 1
            for _ in range(twins):
                members.append((family_name, rng.choice(("male", "female")), year, f"t{child}" if twins > 1 else None))
            year += rng.randint(1, 6)
    generation = rng.choice(_MALE + _FEMALE) if rng.random() < 0.5 else None
    twin_dates: dict[str, date] = {}
    twin_given: dict[str, tuple[str, str]] = {}
    twin_first: dict[str, str] = {}
    people: list[Resident] = []
    for offset, (surname, sex, year, twin) in enumerate(members):
        if twin is not None and twin in twin_dates:
            born = twin_dates[twin]
            first, taken = twin_given[twin]
            pool = _MALE if sex == "male" else _FEMALE
            given = first + rng.choice([c for c in pool if names.sound.get(c) != names.sound.get(taken)])
        else:
            born = date(year, 1, 1) + timedelta(days=rng.randrange(365))
            born = min(born, REFERENCE_DAY - timedelta(days=30))
            given = _given_name(rng, sex, year, generation if offset >= first_child else None)
            if twin is not None:
                twin_dates[twin] = born
                twin_first[twin] = f"p{start + offset:06d}"
                given = given if len(given) == 2 else given + rng.choice(_MALE if sex == "male" else _FEMALE)
                twin_given[twin] = (given[0], given[1])
        person = Resident(
            person_id=f"p{start + offset:06d}",
            surname=surname,
            given=given,
            sex=sex,
            birth_date=born,
            resident_id=_resident_id(rng, used, district, born, sex),
            district=district,
            township=township,
            village=village,
            house=house,
            twin_of=twin_first[twin] if twin is not None and twin_first[twin] != f"p{start + offset:06d}" else None,
        )
        age = REFERENCE_DAY.year - born.year
        own_phone = 0.92 if 18 <= age <= 70 else 0.5 if age > 70 else 0.4 if age >= 12 else 0.0
        if rng.random() < own_phone:
            person.phones.append(_unique(rng, used, _mobile))
        person.cards = _cards(rng, used, district, age)
        people.append(person)
    for person in people:
        person.family_phones = landline + [p for other in people if other is not person for p in other.phones[:1]]
    return people


def _given_name(rng: random.Random, sex: str, year: int, generation: str | None) -> str:
    pool = _MALE if sex == "male" else _FEMALE
    if generation is not None:
        return generation + rng.choice(pool)
    single = 0.3 if year < 1970 else 0.12
    return rng.choice(pool) if rng.random() < single else rng.choice(pool) + rng.choice(pool)


def _resident_id(rng: random.Random, used: set[str], district: str, born: date, sex: str) -> str:
    region = district
    if born.year < 1997 and district in _LEGACY_CODES and rng.random() < 0.3:
        region = _LEGACY_CODES[district]
    elif born.year < 1995 and rng.random() < 0.08:
        region = rng.choice(_MIGRANT_CODES)

    def make(r: random.Random) -> str:
        sequence = r.randrange(100) * 10 + r.randrange(5) * 2 + (1 if sex == "male" else 0)
        first17 = f"{region}{born:%Y%m%d}{sequence:03d}"
        return first17 + resident_id_check_char(first17)

    return _unique(rng, used, make)


def _cards(rng: random.Random, used: set[str], district: str, age: int) -> dict[str, str]:
    urban = district in _URBAN
    cards: dict[str, str] = {}
    if 18 <= age <= 60 and rng.random() < (0.55 if urban else 0.15):
        letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
        cards["social-security-card"] = _unique(rng, used, lambda r: r.choice(letters) + f"{r.randrange(10**8):08d}")
    elif rng.random() < (0.3 if urban else 0.85):
        cards["ncms-card"] = _unique(rng, used, lambda r: district + f"{r.randrange(10**10):010d}")
    if rng.random() < (0.45 if urban else 0.15):
        cards["citizen-card"] = _unique(rng, used, lambda r: "4504" + f"{r.randrange(10**12):012d}")
    return cards


def _record(
    rng: random.Random, names: _Names, villages: Villages, person: Resident, org: str, record_id: str, used: set[str]
) -> LabelledRecord:
    errors: list[str] = []
    patient: dict[str, Any] = {"resourceType": "Patient", "id": record_id}
    identifiers = [{"system": mrn_system(org), "value": f"{rng.randrange(10**8):08d}"}]
    age = REFERENCE_DAY.year - person.birth_date.year
    if rng.random() < (0.55 if age < 16 else 0.82):
        identifiers.append({"system": RESIDENT_ID_SYSTEM, "value": _written_id(rng, person, errors)})
    cards = [key for key in person.cards if rng.random() < 0.55]
    if len(identifiers) == 1 and not cards and person.cards and rng.random() < 0.8:
        cards = [rng.choice(list(person.cards))]
    if len(identifiers) == 1 and cards:
        errors.append("card-only")
    identifiers.extend({"system": _CARD_SYSTEMS[key], "value": person.cards[key]} for key in cards)
    patient["identifier"] = identifiers
    name = _written_name(rng, names, person, errors)
    if name is not None:
        patient["name"] = [name]
    if rng.random() < 0.98:
        patient["gender"] = person.sex
    else:
        errors.append("missing-sex")
    born = _written_birth_date(rng, person.birth_date, errors)
    if born is not None:
        patient["birthDate"] = born.isoformat()
    phones = _written_phones(rng, person, used, errors)
    if phones:
        patient["telecom"] = [{"system": "phone", "value": p} for p in phones]
    address = _written_address(rng, villages, person, errors)
    if address is not None:
        patient["address"] = [address]
    patient["managingOrganization"] = {"reference": f"Organization/{org}"}
    return LabelledRecord(record_id, person.person_id, patient, tuple(errors))


def _written_id(rng: random.Random, person: Resident, errors: list[str]) -> str:
    number = person.resident_id
    roll = rng.random()
    if roll < 0.1 and person.birth_date.year < 1980:
        errors.append("legacy-id")
        return number[:6] + number[8:17]
    if 0.1 <= roll < 0.115:
        errors.append("id-typo")
        position = rng.randrange(17)
        digit = rng.choice([d for d in "0123456789" if d != number[position]])
        return number[:position] + digit + number[position + 1 :]
    return number


def _written_name(rng: random.Random, names: _Names, person: Resident, errors: list[str]) -> dict[str, Any] | None:
    surname, given = person.surname, person.given
    roll = rng.random()
    position = rng.randrange(len(given))
    if roll < 0.05:
        swapped = names.homophone(rng, given[position])
        if swapped:
            given = given[:position] + swapped + given[position + 1 :]
            errors.append("homophone")
    elif roll < 0.075:
        pool = _MALE if person.sex == "male" else _FEMALE
        given = given[:position] + rng.choice(pool.replace(given[position], "")) + given[position + 1 :]
        errors.append("typo")
    elif roll < 0.10:
        traditional = "".join(_TO_TRADITIONAL.get(ch, ch) for ch in surname + given)
        if traditional != surname + given:
            surname, given = traditional[: len(surname)], traditional[len(surname) :]
            errors.append("traditional")
    elif roll < 0.115:
        swapped = names.near_homophone(rng, given[position])
        if swapped:
            given = given[:position] + swapped + given[position + 1 :]
            errors.append("near-homophone")
    elif roll < 0.125:
        errors.append("missing-name")
        return None
    style = rng.randrange(3)
    if style == 0:
        return {"use": "official", "text": surname + given}
    if style == 1:
        return {"use": "official", "family": surname, "given": [given]}
    return {"use": "official", "text": surname + given, "family": surname, "given": [given]}


def _written_birth_date(rng: random.Random, born: date, errors: list[str]) -> date | None:
    roll = rng.random()
    if roll < 0.02 and born.day <= 12 and born.day != born.month:
        errors.append("transposed-date")
        return date(born.year, born.day, born.month)
    if roll < 0.035:
        errors.append("date-off-by-one")
        return born + timedelta(days=rng.choice((-1, 1)))
    if roll < 0.045:
        errors.append("date-digit")
        return born.replace(year=born.year + rng.choice((-1, 1))) if born.month != 2 or born.day != 29 else born
    if roll < 0.08:
        errors.append("missing-date")
        return None
    return born


def _written_phones(rng: random.Random, person: Resident, used: set[str], errors: list[str]) -> list[str]:
    phones: list[str] = []
    for phone in person.phones:
        roll = rng.random()
        if roll < 0.75:
            phones.append(phone)
        elif roll < 0.78:
            i = rng.randrange(3, len(phone) - 1)
            phones.append(phone[:i] + phone[i + 1] + phone[i] + phone[i + 2 :])
            errors.append("phone-swapped-digits")
        elif roll < 0.82:
            phones.append(_unique(rng, used, _mobile))
            errors.append("phone-changed")
    if person.family_phones and (not phones or rng.random() < 0.2) and rng.random() < 0.85:
        phones.append(rng.choice(person.family_phones))
        errors.append("family-phone")
    return phones


def _written_address(
    rng: random.Random, villages: Villages, person: Resident, errors: list[str]
) -> dict[str, Any] | None:
    district, township, village = person.district, person.township, person.village
    roll = rng.random()
    if roll < 0.06:
        errors.append("missing-address")
        return None
    if roll < 0.10:
        errors.append("moved")
        if rng.random() < 0.5:
            district = rng.choice(list(_DISTRICTS))
        township = rng.choice(_DISTRICTS[district][2].split())
        village = rng.choice(villages[(district, township)])
    parts = [township] if roll < 0.17 and roll >= 0.10 else [township, village, person.house]
    district_name = _DISTRICTS[district][0]
    if rng.random() < 0.5:
        return {"use": "home", "state": "广西壮族自治区", "city": "梧州市", "district": district_name, "line": parts}
    prefix = rng.choice(("", "梧州市", "广西壮族自治区梧州市", "广西梧州"))
    return {"use": "home", "text": prefix + district_name + "".join(parts)}


@dataclass(frozen=True)
class LinkageQuality:
    """Blocking and scoring figures of one run over a labelled set."""

    records: int
    true_pairs: int
    candidate_pairs: int
    blocked_true_pairs: int
    certain_true: int
    certain_false: int
    probable_true: int
    probable_false: int
    seconds_records: float
    seconds_blocking: float
    seconds_scoring: float
    twin_pairs: int
    twin_certain: int
    twin_probable: int
    false_certain: tuple[tuple[int, int], ...]
    missed: tuple[tuple[int, int], ...]

    @property
    def certain_precision(self) -> float:
        return self.certain_true / max(1, self.certain_true + self.certain_false)

    @property
    def certain_recall(self) -> float:
        return self.certain_true / max(1, self.true_pairs)

    @property
    def probable_precision(self) -> float:
        return self.probable_true / max(1, self.probable_true + self.probable_false)

    @property
    def probable_recall(self) -> float:
        return self.probable_true / max(1, self.true_pairs)

    @property
    def blocking_recall(self) -> float:
        return self.blocked_true_pairs / max(1, self.true_pairs)

    @staticmethod
    def f1(precision: float, recall: float) -> float:
        return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def evaluate_linkage(
    dataset: MpiDataset,
    *,
    model: MatchModel = DEFAULT_MODEL,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    keep: int = 25,
) -> LinkageQuality:
    """Fold, block and score the whole set; count certain and probable-or-better links against the labels."""
    started = time.perf_counter()
    folded = [person_record_from_patient(r.patient) for r in dataset.records]
    folded_at = time.perf_counter()
    pairs = candidate_pairs(folded)
    blocked_at = time.perf_counter()
    truth = dataset.true_pairs()
    twins = {frozenset((p.person_id, p.twin_of)) for p in dataset.residents if p.twin_of}
    twin_pairs = twin_certain = twin_probable = 0
    certain = [0, 0]
    probable = [0, 0]
    false_certain: list[tuple[int, int]] = []
    linked: set[tuple[int, int]] = set()
    for i, j in sorted(pairs):
        grade = score_pair(folded[i], folded[j], model=model, thresholds=thresholds).grade
        is_match = (i, j) in truth
        if grade is MatchGrade.CERTAIN:
            certain[0 if is_match else 1] += 1
            if not is_match and len(false_certain) < keep:
                false_certain.append((i, j))
        if grade in (MatchGrade.CERTAIN, MatchGrade.PROBABLE):
            probable[0 if is_match else 1] += 1
            if is_match:
                linked.add((i, j))
        if frozenset((dataset.records[i].person_id, dataset.records[j].person_id)) in twins:
            twin_pairs += 1
            twin_certain += grade is MatchGrade.CERTAIN
            twin_probable += grade is MatchGrade.PROBABLE
    scored_at = time.perf_counter()
    return LinkageQuality(
        records=len(folded),
        true_pairs=len(truth),
        candidate_pairs=len(pairs),
        blocked_true_pairs=len(truth & pairs),
        certain_true=certain[0],
        certain_false=certain[1],
        probable_true=probable[0],
        probable_false=probable[1],
        seconds_records=folded_at - started,
        seconds_blocking=blocked_at - folded_at,
        seconds_scoring=scored_at - blocked_at,
        twin_pairs=twin_pairs,
        twin_certain=twin_certain,
        twin_probable=twin_probable,
        false_certain=tuple(false_certain),
        missed=tuple(sorted(truth - linked)[:keep]),
    )
