"""The MovieLens adapter: tiny hand-written MovieLens folders in, contract datasets out."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from data.adapters import prepare_movielens
from data.adapters.movielens import MAX_TAGS, REPORT_FILE
from data.dataset import load_dataset
from data.errors import DataError
from data.spec import read_spec

REAL = Path(__file__).resolve().parents[2].parent / "shared/data/movielens-small"

MOVIES = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children
2,"American President, The (1995)",Comedy|Drama
3,Black Mirror,(no genres listed)
4,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",Fantasy|Sci-Fi
5,Death Note: Desu nôto (2006–2007),Mystery
"""
RATINGS = """userId,movieId,rating,timestamp
1,1,4.0,964982703
1,2,3.5,964981247
2,1,5.0,964982224
2,3,0.5,964983815
3,4,4.5,964984000
3,1,2.0,964985000
"""
# Movie 1: "pixar" twice (case and spacing differ), then "animation" and "fun" once each;
# movie 99 is not in movies.csv; movie 5 gets more distinct tags than the cap.
TAGS = "userId,movieId,tag,timestamp\n1,1,Pixar,1\n2,1,pixar ,2\n3,1,fun,3\n1,1,Animation,4\n" \
    "1,2,politics,5\n9,99,orphan,6\n" + "".join(f"1,5,t{i:02d},7\n" for i in range(MAX_TAGS + 5))
LINKS = "movieId,imdbId,tmdbId\n1,0114709,862\n2,0112346,\n"
LIKES_AT_4 = [1, 0, 1, 0, 1, 0]


def write_source(root: Path, tags: bool = True, links: bool = True) -> Path:
    root.mkdir(parents=True)
    (root / "movies.csv").write_text(MOVIES, encoding="utf-8")
    (root / "ratings.csv").write_text(RATINGS, encoding="utf-8")
    if tags:
        (root / "tags.csv").write_text(TAGS, encoding="utf-8")
    if links:
        (root / "links.csv").write_text(LINKS, encoding="utf-8")
    return root


def write_posters(root: Path) -> Path:
    """Valid posters for movies 1 and 2, a broken one for 4, one for an unknown movie, noise."""
    root.mkdir(parents=True)
    for movie_id, color in [(1, (200, 30, 30)), (2, (30, 200, 30)), (99, (0, 0, 0))]:
        Image.new("RGB", (4, 6), color).save(root / f"{movie_id}.jpg", "JPEG")
    (root / "4.jpg").write_bytes(b"not a jpeg")
    (root / "README.txt").write_text("posters named <movieId>.jpg")
    return root


def leftovers(parent: Path) -> list[str]:
    """Hidden temp or backup directories the adapter might have left beside its output."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture
def prepared(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    src = write_source(tmp_path / "ml-tiny")
    posters = write_posters(tmp_path / "posters")
    lines: list[str] = []
    with pytest.warns(UserWarning, match=r"1 poster\(s\) unreadable"):
        out = prepare_movielens(src, tmp_path / "out" / "ml", posters=posters, log=lines.append)
    return out, posters, lines


def test_output_loads_and_holds_the_mapped_values(prepared: tuple[Path, Path, list[str]]) -> None:
    out, posters, lines = prepared
    spec = read_spec(out)
    assert spec.name == "ml-tiny"
    assert spec.interactions.labels == ["like"]
    assert spec.items.text == ["title", "genres", "tags"]
    assert (spec.items.image, spec.items.categorical) == ("poster", ["year", "genres", "tag_list"])
    assert spec.items.multi_valued == {"genres": ", "}
    assert spec.users is None

    inter = pl.read_parquet(out / "interactions.parquet")
    assert inter["user_id"].to_list() == [1, 1, 2, 2, 3, 3]
    assert inter["item_id"].to_list() == [1, 2, 1, 3, 4, 1]
    assert inter["timestamp"].dtype == pl.Int64 and inter["timestamp"][0] == 964982703
    assert inter["like"].to_list() == LIKES_AT_4
    assert inter["rating"].to_list() == [4.0, 3.5, 5.0, 0.5, 4.5, 2.0]

    items = pl.read_parquet(out / "items.parquet")
    assert items["item_id"].to_list() == [1, 2, 3, 4, 5]
    assert items["title"].to_list() == [
        "Toy Story", "The American President", "Black Mirror",
        "The City of Lost Children (Cité des enfants perdus, La)", "Death Note: Desu nôto",
    ]
    assert items["year"].to_list() == [1995, 1995, None, 1995, 2006]
    assert items["genres"].to_list() == [
        "Adventure, Animation, Children", "Comedy, Drama", None, "Fantasy, Sci-Fi", "Mystery"]
    tags = items["tags"].to_list()
    assert tags[:4] == ["pixar, animation, fun", "politics", None, None]
    assert tags[4].split(", ") == [f"t{i:02d}" for i in range(MAX_TAGS)]
    assert items["imdb_id"].to_list() == ["0114709", "0112346", None, None, None]
    assert items["tmdb_id"].to_list() == ["862", None, None, None, None]
    # 4.jpg is broken and 99.jpg has no movie: neither makes it into the dataset.
    assert items["poster"].to_list() == ["posters/1.jpg", "posters/2.jpg", None, None, None]
    assert sorted(p.name for p in (out / "posters").iterdir()) == ["1.jpg", "2.jpg"]
    assert (out / "posters/1.jpg").read_bytes() == (posters / "1.jpg").read_bytes()

    ds = load_dataset(out)
    assert ds.interactions["like"].to_list() == LIKES_AT_4
    assert ds.items["text"][0] == (
        "Toy Story | Adventure, Animation, Children | pixar, animation, fun")
    assert ds.items["item_year"].to_list() == ["1995", "1995", "<null>", "1995", "2006"]
    # Genres and tags are bags: a missing one is an empty bag, not a "<null>" value.
    assert ds.items["item_genres"].to_list() == [
        ["Adventure", "Animation", "Children"], ["Comedy", "Drama"], [], ["Fantasy", "Sci-Fi"], ["Mystery"]]
    assert ds.items["item_tag_list"].to_list()[:4] == [["pixar", "animation", "fun"], ["politics"], [], []]
    assert len(ds.items["item_tag_list"][4]) == MAX_TAGS
    assert ds.items["image"][0] == str((out / "posters/1.jpg").resolve())
    assert ds.items["image"].null_count() == 3

    report = json.loads((out / REPORT_FILE).read_text())
    counts = {"rows": 6, "users": 3, "items": 5, "rated_items": 4, "tagged_items": 3,
              "items_with_poster": 2, "posters_unreadable": 1, "posters_unmatched": 1}
    assert {k: report[k] for k in counts} == counts
    assert report["like_share"] == pytest.approx(0.5)
    assert report["poster_share_items"] == pytest.approx(2 / 5)
    # Ratings of movies 1, 2, 1, 1 out of six have a poster.
    assert report["poster_share_ratings"] == pytest.approx(4 / 6, abs=1e-6)
    assert report["poster_transfer"] in {"hardlink", "copy"}
    assert lines[0] == f"wrote {out}" and "66.7% of ratings" in lines[3]
    assert leftovers(out.parent) == []


def test_threshold_and_minimal_folder(tmp_path: Path) -> None:
    # Only the two required files and no posters: no tags, links or image in the output.
    src = write_source(tmp_path / "ml", tags=False, links=False)
    out = prepare_movielens(src, tmp_path / "out", like_threshold=3.5, log=None)
    spec = read_spec(out)
    assert spec.items.text == ["title", "genres"] and spec.items.image is None
    assert pl.read_parquet(out / "items.parquet").columns == ["item_id", "title", "genres", "year"]
    assert load_dataset(out).interactions["like"].to_list() == [1, 1, 1, 0, 1, 0]
    assert not (out / "posters").exists()
    with pytest.raises(ValueError, match="like_threshold"):
        prepare_movielens(src, tmp_path / "other", like_threshold=6.0, log=None)


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    src = write_source(tmp_path / "ml")
    out = tmp_path / "out"
    out.mkdir()  # an existing empty directory is fine
    prepare_movielens(src, out, log=None)
    with pytest.raises(DataError, match="not empty; pass overwrite=True") as err:
        prepare_movielens(src, out, like_threshold=3.5, log=None)
    assert err.value.problems[0].file == str(out)
    assert pl.read_parquet(out / "interactions.parquet")["like"].to_list() == LIKES_AT_4

    prepare_movielens(src, out, like_threshold=3.5, overwrite=True, log=None)
    assert pl.read_parquet(out / "interactions.parquet")["like"].to_list() == [1, 1, 1, 0, 1, 0]
    assert leftovers(tmp_path) == []

    # overwrite never deletes a directory that is not a dataset, nor one holding the inputs.
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="does not look like a dataset"):
        prepare_movielens(src, foreign, overwrite=True, log=None)
    assert (foreign / "notes.txt").read_text() == "keep me"
    inner_src = write_source(out / "raw")
    with pytest.raises(DataError, match="contains the input"):
        prepare_movielens(inner_src, out, overwrite=True, log=None)
    assert (inner_src / "ratings.csv").is_file()


# (file, text to replace (None: delete the file), replacement, column, row, message fragment)
MALFORMED = {
    "missing ratings.csv": ("ratings.csv", None, None, None, None, "missing file"),
    "missing movies.csv": ("movies.csv", None, None, None, None, "missing file"),
    "missing rating column": ("ratings.csv", "userId,movieId,rating,", "userId,movieId,score,",
                              "rating", None, "missing column"),
    "missing genres column": ("movies.csv", "title,genres", "title,genre", "genres", None,
                              "missing column"),
    "missing tag column": ("tags.csv", "movieId,tag,", "movieId,label,", "tag", None,
                           "missing column"),
    "non-numeric rating": ("ratings.csv", "\n1,2,3.5,", "\n1,2,abc,", "rating", 2,
                           "rating is not a number: 'abc'"),
    "rating above 5": ("ratings.csv", "\n3,4,4.5,", "\n3,4,5.5,", "rating", 5,
                       "rating 5.5 is outside [0.5, 5]"),
    "rating below 0.5": ("ratings.csv", "\n2,3,0.5,", "\n2,3,0,", "rating", 4,
                         "rating 0 is outside [0.5, 5]"),
    "null rating": ("ratings.csv", "\n2,3,0.5,", "\n2,3,,", "rating", 4, "null rating"),
    "null userId": ("ratings.csv", "\n2,1,5.0,", "\n,1,5.0,", "userId", 3, "null id"),
    "non-integer userId": ("ratings.csv", "\n2,1,5.0,", "\nu2,1,5.0,", "userId", 3,
                           "unparsable id 'u2'"),
    "null movieId in movies": ("movies.csv", "\n3,Black", "\n,Black", "movieId", 3, "null id"),
    "rating of an unknown movie": ("ratings.csv", "\n3,1,2.0,", "\n3,7,2.0,", "movieId", 6,
                                   "movie 7 is not in movies.csv"),
    "duplicate movieId": ("movies.csv", "\n3,Black", "\n2,Black", "movieId", 3,
                          "duplicate id '2' (rows 2 and 3)"),
    "duplicate movieId in links": ("links.csv", "\n2,0112346", "\n1,0112346", "movieId", 2,
                                   "duplicate id '1'"),
    "unparsable timestamp": ("ratings.csv", "964981247", "yesterday", "timestamp", 2,
                             "unparsable timestamp 'yesterday'"),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_source_names_file_column_and_row(tmp_path: Path, case: str) -> None:
    file, old, new, column, row, fragment = MALFORMED[case]
    src = write_source(tmp_path / "ml")
    path = src / file
    if old is None:
        path.unlink()
    else:
        text = path.read_text(encoding="utf-8")
        assert text.count(old) == 1, "the case must edit exactly one place"
        path.write_text(text.replace(old, new), encoding="utf-8")

    with pytest.raises(DataError) as err:
        prepare_movielens(src, tmp_path / "out", log=None)
    problem = err.value.problems[0]
    assert (problem.file, problem.column, problem.row) == (str(path), column, row)
    assert fragment in problem.message
    message = str(err.value)
    assert str(path) in message and fragment in message
    if column is not None:
        assert f"column '{column}'" in message
    if row is not None:
        assert f"row {row}" in message
    # Nothing is written when the input is bad.
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_every_column_problem_is_reported_in_one_run(tmp_path: Path) -> None:
    src = write_source(tmp_path / "ml")
    (src / "ratings.csv").write_text(RATINGS.replace("\n1,2,3.5,", "\n1,2,abc,")
                                     .replace("964985000", "soon"), encoding="utf-8")
    (src / "movies.csv").write_text(MOVIES.replace("\n3,Black", "\n,Black"), encoding="utf-8")
    with pytest.raises(DataError) as err:
        prepare_movielens(src, tmp_path / "out", log=None)
    found = {(Path(p.file).name, p.column, p.row) for p in err.value.problems}
    assert found == {("movies.csv", "movieId", 3), ("ratings.csv", "rating", 2),
                     ("ratings.csv", "timestamp", 6)}


def test_real_movielens_small(tmp_path: Path) -> None:
    if not (REAL / "ratings.csv").is_file():
        pytest.skip(f"real MovieLens copy not present at {REAL}")
    out = prepare_movielens(REAL, tmp_path / "ml", posters=REAL / "posters", log=None)
    report = json.loads((out / REPORT_FILE).read_text())
    assert (report["rows"], report["users"]) == (100836, 610)
    assert report["items"] == pl.read_csv(REAL / "movies.csv").height
    assert report["poster_share_ratings"] == pytest.approx(0.58, abs=0.02)
    assert report["posters_unreadable"] == 0
    ds = load_dataset(out)
    assert ds.interactions.height == 100836
    assert ds.items["image"].null_count() == ds.items.height - report["items_with_poster"]
    # `recsys data check` reports the same poster coverage of ratings.
    from data.summary import summarize

    assert summarize(ds)["rows_with_image_share"] == pytest.approx(report["poster_share_ratings"])


def test_poster_names_are_normalised_and_jpg_preferred(tmp_path: Path) -> None:
    src = write_source(tmp_path / "ml", tags=False, links=False)
    posters = tmp_path / "posters"
    posters.mkdir()
    Image.new("RGB", (3, 3), (1, 2, 3)).save(posters / "005.JPG", "JPEG")
    Image.new("RGB", (3, 3), (1, 2, 3)).save(posters / "5.png", "PNG")  # loses to the JPEG
    Image.new("RGB", (3, 3), (1, 2, 3)).save(posters / "3.png", "PNG")
    out = prepare_movielens(src, tmp_path / "out", posters=posters, log=None)
    items = pl.read_parquet(out / "items.parquet")
    assert items["poster"].to_list() == [None, None, "posters/3.png", None, "posters/5.jpg"]
    assert (out / "posters/5.jpg").read_bytes() == (posters / "005.JPG").read_bytes()
    assert load_dataset(out).items["image"].null_count() == 3
