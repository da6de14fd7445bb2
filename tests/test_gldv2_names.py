"""Landmark names and image paths from GLDv2 fields (eeca.gldv2.names, eeca.gldv2.paths)."""

from pathlib import Path
from urllib.parse import quote

import pytest

from eeca.gldv2.names import landmark_name
from eeca.gldv2.paths import check_id, image_path, image_relpath

WIKI = "https://commons.wikimedia.org/wiki/Category:"


@pytest.mark.parametrize("url, name", [
    (WIKI + "Eiffel_Tower", "Eiffel Tower"),
    (WIKI + "Haleakal%C4%81_National_Park", "Haleakalā National Park"),
    (WIKI + "St._Mary%27s_Church_(Dublin)", "St. Mary's Church (Dublin)"),
    (WIKI + "Church_of_St._Nicholas,_Kyiv", "Church of St. Nicholas, Kyiv"),
    (WIKI + "Sagrada_Fam%C3%ADlia%2C_Barcelona", "Sagrada Família, Barcelona"),
    (WIKI + "Bridge_(Stari_Most),_Mostar_(Bosnia)", "Bridge (Stari Most), Mostar (Bosnia)"),
    (WIKI + "%D0%9A%D0%B8%D0%B5%D0%B2%D0%BE-%D0%9F%D0%B5%D1%87%D0%B5%D1%80%D1%81%D0%BA%D0%B0%D1%8F_"
            "%D0%BB%D0%B0%D0%B2%D1%80%D0%B0", "Киево-Печерская лавра"),
    (WIKI + "%E6%B8%85%E6%B0%B4%E5%AF%BA", "清水寺"),
    (WIKI + "%D8%A7%D9%84%D9%85%D8%B3%D8%AC%D8%AF_%D8%A7%D9%84%D8%A3%D9%82%D8%B5%D9%89", "المسجد الأقصى"),
    (WIKI + "Храм_Христа_Спасителя", "Храм Христа Спасителя"),  # unencoded non-Latin text
    ("http://commons.wikimedia.org/wiki/Category:Tower_Bridge", "Tower Bridge"),
    (WIKI + "A%2BB_Gate", "A+B Gate"),
    (WIKI + "Fort_Point_(San_Francisco)?uselang=de#top", "Fort Point (San Francisco)"),
    (WIKI + "Lake__Bled_", "Lake Bled"),
])
def test_landmark_name_from_real_looking_urls(url, name):
    assert landmark_name(url) == name


@pytest.mark.parametrize("name", ["Tour Eiffel (Paris), France", "Basílica de la Sagrada Família",
                                  "東京タワー", "Мечеть Кул-Шариф", "جامع الحسن الثاني", "A & B's \"Gate\""])
def test_name_round_trips_through_wikimedia_encoding(name):
    # how Wikimedia spells the title in a url: spaces as underscores, then percent-encoded UTF-8
    assert landmark_name(WIKI + quote(name.replace(" ", "_"), safe="(),'")) == name


@pytest.mark.parametrize("url", ["https://commons.wikimedia.org/wiki/Eiffel_Tower", WIKI, WIKI + "___",
                                 WIKI + "%C4_Broken_UTF8", "",
                                 WIKI + "Tower%ZZ", WIKI + "Tower%4", WIKI + "100%",  # not percent-encoding
                                 WIKI + "Tower%00Bridge", WIKI + "Tower%07",  # control characters
                                 WIKI + "%E2%80%8B", WIKI + "_%E2%80%8B_%E2%80%8C_", WIKI + "%C2%A0%E3%80%80",
                                 WIKI + "%EF%BB%BF"])  # zero-width, no-break and ideographic spaces, BOM
def test_landmark_name_rejects_urls_without_a_name(url):
    with pytest.raises(ValueError):
        landmark_name(url)


def test_image_paths_follow_the_gldv2_layout(tmp_path):
    assert image_relpath("6e158a47eb2ca3f6") == "train/6/e/1/6e158a47eb2ca3f6.jpg"
    assert image_path(tmp_path, "0123456789abcdef") == tmp_path / "train/0/1/2/0123456789abcdef.jpg"


@pytest.mark.parametrize("bad", ["../../../etc/pass", "/abs/olute/path0", "0123456789abcde", "0123456789abcdef0",
                                 "0123456789ABCDEF", "0123456789abcdeg", "01234567/9abcdef", "", None])
def test_ids_that_could_escape_the_root_or_are_not_gldv2_are_rejected(bad, tmp_path):
    with pytest.raises(ValueError):
        check_id(bad)
    with pytest.raises(ValueError):
        image_path(tmp_path, bad)


def test_every_valid_id_stays_under_the_root(tmp_path):
    for image_id in ("0000000000000000", "ffffffffffffffff", "a1b2c3d4e5f60789"):
        resolved = image_path(tmp_path, image_id).resolve()
        assert resolved.is_relative_to(tmp_path.resolve()) and resolved.name == image_id + ".jpg"
        assert Path(image_relpath(image_id)).parts[1:4] == tuple(image_id[:3])
