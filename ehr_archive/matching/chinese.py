"""Chinese personal names for matching: traditional→simplified folding, surname split, toneless pinyin (GB/T 28039)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from pypinyin import Style, pinyin

__all__ = [
    "COMPOUND_SURNAMES",
    "TRADITIONAL_TO_SIMPLIFIED",
    "ChineseName",
    "fuzzy_syllable",
    "parse_chinese_name",
    "to_simplified",
]

# Traditional → simplified for characters common in names (surnames first); the generic converters (OpenCC and
# the like) are phrase-oriented and far larger than what folding a personal name needs.
_PAIRS = """
陳陈 黃黄 劉刘 張张 楊杨 趙赵 吳吴 鄭郑 謝谢 羅罗 鍾钟 鐘钟 鄧邓 蘇苏 盧卢 馮冯 陸陆 麥麦 蔣蒋 賴赖 歐欧 關关
韋韦 許许 孫孙 馬马 葉叶 蕭萧 龍龙 錢钱 賀贺 顧顾 龔龚 嚴严 湯汤 韓韩 鄒邹 閻阎 譚谭 魯鲁 溫温 萬万 鄔邬 駱骆
聶聂 鄺邝 區区 饒饶 倫伦 簡简 祿禄 衛卫 練练 勞劳 寧宁 甯宁 龐庞 賈贾 顏颜 藍蓝 鳳凤 紀纪 齊齐 喬乔 華华 莊庄
項项 單单 費费 遲迟 偉伟 國国 興兴 東东 麗丽 紅红 軍军 維维 傑杰 強强 雲云 輝辉 鵬鹏 飛飞 寶宝 貴贵 順顺 愛爱
蘭兰 榮荣 慶庆 勝胜 聰聪 鳴鸣 銘铭 靜静 嬌娇 濤涛 義义 禮礼 進进 長长 發发 財财 億亿 廣广 賢贤 凱凯 瑩莹 穎颖
瓊琼 蓮莲 潔洁 遠远 達达 運运 開开 業业 嬋婵 綺绮 詩诗 錦锦 鋒锋 銳锐 歡欢 樂乐 陽阳 剛刚 學学 劍剑 權权 瑋玮
暉晖 傳传 書书 壽寿 會会 園园 聖圣 燦灿 煒炜 紹绍 憲宪 鴻鸿 儀仪 豐丰 艷艳 豔艳 濱滨 淵渊 潤润 澤泽 瀾澜 灝灏
煥焕 瑤瑶 環环 純纯 綠绿 緣缘 聯联 蔭荫 薈荟 蘊蕴 誠诚 諾诺 謙谦 譽誉 貞贞 賓宾 贊赞 軒轩 連连 鄉乡 釗钊 鈞钧
鈺钰 銀银 鋼钢 錚铮 鍵键 鎮镇 鏡镜 鐵铁 雙双 韻韵 頌颂 顯显 風风 驊骅 騰腾 黨党 齡龄 靈灵 誌志 峯峰 岡冈 嶺岭
崗岗 棟栋 楨桢 樺桦 橋桥 歸归 漢汉 灣湾 憶忆 懷怀 擇择 曉晓 暢畅 標标 樹树 濃浓 絢绚 綱纲 緒绪 總总 繼继 續续
習习 聞闻 聲声 肅肃 臺台 舉举 藝艺 蕓芸 蘋苹 覺觉 親亲 詠咏 語语 論论 諸诸 識识 貝贝 資资 賜赐 贏赢 車车 農农
邁迈 醫医 門门 閩闽 閣阁 陰阴 際际 難难 電电 頂顶 領领 題题 願愿 飄飘 餘余 館馆 馳驰 駿骏 體体 鮮鲜 鴿鸽 鵑鹃
鶯莺 鶴鹤 鷹鹰 嬡嫒 瑪玛
"""
TRADITIONAL_TO_SIMPLIFIED: dict[str, str] = {pair[0]: pair[1] for pair in _PAIRS.split()}

_COMPOUNDS = """
欧阳 司马 诸葛 上官 东方 皇甫 尉迟 公孙 令狐 慕容 夏侯 长孙
宇文 司徒 端木 独孤 南宫 西门 闻人 澹台 轩辕 呼延 万俟
"""
COMPOUND_SURNAMES = frozenset(_COMPOUNDS.split())

# Readings of surnames where the everyday reading differs (《百家姓》 usage); compound ones per syllable.
_SURNAME_TEXT = """
单shan 曾zeng 解xie 仇qiu 区ou 朴piao 查zha 盖ge 乐yue 覃qin 缪miao 种chong 翟zhai 秘bi 召shao 繁po
员yun 宿su 能nai 折she 句gou 阚kan 粘nian 晟cheng 任ren 那na 都du 沈shen 贾jia 柏bai 隗wei 祭zhai
逄pang 褚chu 莘shen 牟mou 蔚yu 叶ye 石shi 车che 薄bo 卜bu 长chang 万wan 尉wei 朝chao 重chong 冼xian
尉迟yu,chi 长孙zhang,sun 万俟mo,qi 澹台tan,tai
"""
_SURNAME_READINGS: dict[str, tuple[str, ...]] = {
    surname: tuple(readings.split(",")) for surname, readings in re.findall(r"([^\sa-z,]+)([a-z,]+)", _SURNAME_TEXT)
}

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[a-z\u00fc]+")
_DROPPED = re.compile(r"[\s·•.．・\-]+")

_FUZZY_INITIALS = (("zh", "z"), ("ch", "c"), ("sh", "s"), ("n", "l"), ("f", "h"), ("r", "l"))
_FUZZY_FINALS = (("iang", "ian"), ("uang", "uan"), ("ang", "an"), ("eng", "en"), ("ing", "in"))


@dataclass(frozen=True, slots=True)
class ChineseName:
    """A personal name folded for comparison: simplified characters and toneless pinyin per syllable."""

    text: str
    surname: str
    given: str
    syllables: tuple[str, ...]
    readings: tuple[frozenset[str], ...]
    surname_syllables: int

    @property
    def initials(self) -> str:
        return "".join(s[0] for s in self.syllables)

    @property
    def full_pinyin(self) -> str:
        return "".join(self.syllables)

    @property
    def surname_pinyin(self) -> str:
        return "".join(self.syllables[: self.surname_syllables])


def to_simplified(text: str) -> str:
    """Fold traditional characters of names to their simplified forms (General List of Standard Characters)."""
    return "".join(TRADITIONAL_TO_SIMPLIFIED.get(ch, ch) for ch in text)


@lru_cache(maxsize=4096)
def fuzzy_syllable(syllable: str) -> str:
    """Fold the initials and finals that southern speakers merge (zh/z, n/l, f/h, ang/an, ing/in …); cached: Mandarin
    has about 400 toneless syllables."""
    for long, short in _FUZZY_INITIALS:
        if syllable.startswith(long):
            syllable = short + syllable[len(long) :]
            break
    for long, short in _FUZZY_FINALS:
        if syllable.endswith(long):
            return syllable[: -len(long)] + short
    return syllable


def parse_chinese_name(family: str = "", given: str = "", text: str = "") -> ChineseName | None:
    """Fold a name given as family + given parts or as one text; Latin text is read as pinyin words."""
    latin = (" ".join(part for part in (family, given) if part) or text or "").lower()
    family, given, text = (_DROPPED.sub("", to_simplified(part or "")) for part in (family, given, text))
    full = family + given if family or given else text
    if not full:
        return None
    if not _HAN.search(full):
        words = _LATIN_WORD.findall(latin)
        if not words:
            return None
        syllables = tuple(w.replace("\u00fc", "v") for w in words)
        return ChineseName("".join(syllables), "", "", syllables, tuple(frozenset((s,)) for s in syllables), 1)
    if not family:
        family = full[:2] if full[:2] in COMPOUND_SURNAMES and len(full) > 2 else full[:1]
        given = full[len(family) :]
    readings = _surname_readings(family) + tuple(_char_readings(ch) for ch in given)
    syllables = tuple(r[0] for r in readings)
    return ChineseName(
        text=family + given,
        surname=family,
        given=given,
        syllables=syllables,
        readings=tuple(frozenset(r) for r in readings),
        surname_syllables=len(family),
    )


def _surname_readings(surname: str) -> tuple[tuple[str, ...], ...]:
    fixed = _SURNAME_READINGS.get(surname)
    if fixed:
        return tuple((syllable,) for syllable in fixed)
    return tuple(_char_readings(ch) for ch in surname)


@lru_cache(maxsize=16384)
def _char_readings(ch: str) -> tuple[str, ...]:
    if not _HAN.match(ch):
        return (ch.lower(),)
    readings = pinyin(ch, style=Style.NORMAL, heteronym=True, errors="default")[0]
    return tuple(dict.fromkeys(r.replace("\u00fc", "v") for r in readings)) or (ch,)
