"""Reading an uploaded .xlsx or .csv into rows of text, safely, and writing the import template.

An .xlsx is a zip of XML. Before openpyxl opens one, its zip directory is checked: at most
:data:`MAX_MEMBERS` members, none larger than :data:`MAX_MEMBER_BYTES` uncompressed and together at
most :data:`MAX_UNCOMPRESSED_BYTES`, and no member compressed more than :data:`MAX_RATIO` times (a
zip bomb). The sizes checked are the declared ones, and they are also what Python's ``zipfile``
reads at most: a member cannot inflate past them. openpyxl then reads in read-only (streaming)
mode; the XML parser it uses (the standard library's expat) refuses entity-expansion bombs. Any
failure to read is the client's file: 400 ``malformed-file``; any limit passed: 413 ``file-too-large``.

This is blocking work: call it in ``asyncio.to_thread``.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from typing import Any

from openpyxl import Workbook, load_workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation

from services.common.errors import Problem
from services.registry.problems import RegistryProblem
from services.registry.transfer.columns import COLUMNS, Column, data_types_help

XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_MEDIA_TYPE = "text/csv"
MAX_FILE_BYTES = 8 * 1024 * 1024  # a 10,000-row sheet is about 1 MiB
MAX_MEMBERS = 256
MAX_MEMBER_BYTES = 64 * 1024 * 1024
MAX_UNCOMPRESSED_BYTES = 128 * 1024 * 1024
MAX_RATIO = 200  # sheet XML compresses 10–50 times; far more is a bomb
MAX_ROWS = 10_000
SHEET = "资源目录"
INSTRUCTIONS = "填写说明"
LISTS = "代码表"

Row = tuple[int, dict[str, str]]  # spreadsheet row number (the header is row 1), header → cell text


def malformed(what: str) -> Problem:
    return RegistryProblem.MALFORMED_FILE.problem(what)


def too_large(what: str) -> Problem:
    return RegistryProblem.FILE_TOO_LARGE.problem(what)


def check_size(content: bytes) -> None:
    if len(content) > MAX_FILE_BYTES:
        raise too_large(f"文件大于 {MAX_FILE_BYTES // (1024 * 1024)} MiB (file larger than the limit).")
    if not content:
        raise malformed("文件为空 (the file is empty).")


def check_zip(content: bytes) -> None:
    """The zip directory of an .xlsx within the limits above (sizes as declared)."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as err:
        raise malformed(f"不是有效的 .xlsx 文件 (not a valid .xlsx, i.e. zip, file): {err}") from err
    if len(members) > MAX_MEMBERS:
        raise too_large(f".xlsx 中有 {len(members)} 个部件 (more than {MAX_MEMBERS} zip members).")
    total = 0
    for member in members:
        total += member.file_size
        if member.file_size > MAX_MEMBER_BYTES or total > MAX_UNCOMPRESSED_BYTES:
            raise too_large(f".xlsx 解压后过大 (uncompressed size beyond the limit at {member.filename!r}).")
        if member.file_size > 1024 * 1024 and member.file_size > MAX_RATIO * max(member.compress_size, 1):
            raise too_large(f".xlsx 压缩比异常，疑似压缩炸弹 (zip bomb: {member.filename!r} expands too much).")
    names = {m.filename for m in members}
    if "[Content_Types].xml" not in names or "xl/workbook.xml" not in names:
        raise malformed("不是 Excel 工作簿 (the zip is not an .xlsx workbook).")


def cell_text(value: Any) -> str:
    """A cell as text: a whole number typed into a cell (分类码 101010) without ``.0``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def table(lines: Iterable[Iterable[Any]]) -> tuple[list[str], list[Row]]:
    """The header and the non-blank rows of a sheet, numbered as the spreadsheet shows them."""
    iterator: Iterator[Iterable[Any]] = iter(lines)
    header = [cell_text(v).strip() for v in next(iterator, [])]
    while header and not header[-1]:
        header.pop()
    rows: list[Row] = []
    for number, values in enumerate(iterator, start=2):
        texts = [cell_text(v) for v in values]
        if not any(t.strip() for t in texts):
            continue
        if len(rows) == MAX_ROWS:
            raise too_large(f"数据行超过 {MAX_ROWS} 行 (more than {MAX_ROWS} rows); 请分批导入.")
        rows.append((number, {h: t for h, t in zip(header, texts, strict=False) if h}))
    return header, rows


def read_xlsx(content: bytes) -> tuple[list[str], list[Row]]:
    check_size(content)
    check_zip(content)
    try:
        workbook = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except Exception as err:  # whatever openpyxl fails on is the client's file
        raise malformed(f"无法读取 .xlsx 文件 (cannot read the workbook): {type(err).__name__}") from err
    try:
        sheet = workbook[SHEET] if SHEET in workbook.sheetnames else workbook.worksheets[0]
        return table(sheet.iter_rows(values_only=True))
    except Problem:
        raise
    except Exception as err:  # a broken sheet, found while streaming it
        raise malformed(f"无法读取工作表 (cannot read the sheet): {type(err).__name__}") from err
    finally:
        workbook.close()


def read_csv(content: bytes) -> tuple[list[str], list[Row]]:
    """UTF-8 (with or without BOM) or, as Excel saves "CSV" on Chinese Windows, GB18030."""
    check_size(content)
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = content.decode("gb18030")
        except UnicodeDecodeError as err:
            raise malformed("CSV 既不是 UTF-8 也不是 GB18030 编码 (neither UTF-8 nor GB18030).") from err
    if "\x00" in text:
        raise malformed("CSV 含有 NUL 字符 (the CSV contains a NUL character).")
    try:
        return table(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise malformed(f"CSV 格式错误 (malformed CSV): {err}") from err


def read_upload(content: bytes, media_type: str) -> tuple[list[str], list[Row]]:
    """The header and rows of an uploaded file of ``media_type`` (its Content-Type, no parameters)."""
    if media_type == XLSX_MEDIA_TYPE:
        return read_xlsx(content)
    if media_type in (CSV_MEDIA_TYPE, "application/csv"):
        return read_csv(content)
    raise RegistryProblem.UNSUPPORTED_FILE.problem(
        f"Content-Type {media_type or '(none)'}: 请上传 .xlsx ({XLSX_MEDIA_TYPE}) 或 .csv ({CSV_MEDIA_TYPE})."
    )


# --------------------------------------------------------------------------- the template

GUIDE = (
    "《政务信息资源目录》批量导入模板 — 填写说明",
    "",
    "1. 在“资源目录”工作表中每行填写一条信息资源，第 1 行为列名，请勿修改或删除。",
    "2. 带下拉框的列只能选择列表中的值（分类码可填写列表中的目，或在其后加 1–6 位细目）。",
    "3. 导入为“全部或全不”：任何一行有错误，整个文件都不会导入，并返回逐行错误（行号、列名、原因）。",
    "   上传后系统返回导入任务，在后台导入；可随时查询任务的状态、进度和错误报告。",
    "4. 导入的信息资源为草稿，由本部门数据管理员提交审核，平台管理员发布。信息资源代码由系统分配。",
    f"5. 每个文件最多 {MAX_ROWS} 行，文件不超过 {MAX_FILE_BYTES // (1024 * 1024)} MiB；也可另存为 UTF-8 编码的 CSV 导入。",
    "6. 信息项每行一项，格式：名称:数据类型:长度[:敏感][:脱敏规则]，如 公民身份号码:C:18:敏感:id_card。",
    "   脱敏规则：id_card（身份证号）、mobile（手机号）、name（姓名）、full（全部遮蔽）。",
    "7. 以共享为原则、不共享为例外：有条件共享须填写共享条件，不予共享须填写法律、行政法规或政策依据。",
)


def template() -> bytes:
    """The import template of catalogue entries: the entry sheet with a dropdown on every
    enumerated column, the instructions (填写说明) with each column and the 数据类型, and the hidden
    lists (代码表)."""
    return workbook_template(SHEET, COLUMNS, GUIDE, [["数据类型", "含义", "长度"], *map(list, data_types_help())])


def workbook_template(name: str, columns: Sequence[Column], guide_lines: Sequence[str], more: list[list[str]]) -> bytes:
    """An import template: sheet ``name`` with ``columns`` (a dropdown on every enumerated one), the
    instructions sheet (``guide_lines``, then each column, then the rows of ``more``) and the hidden
    lists the dropdowns offer."""
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = name
    guide = workbook.create_sheet(INSTRUCTIONS)
    lists = workbook.create_sheet(LISTS)
    lists.sheet_state = "hidden"
    bold = Font(bold=True)
    required = Font(bold=True, color="C00000")
    for index, column in enumerate(columns, start=1):
        letter = get_column_letter(index)
        cell = sheet.cell(row=1, column=index, value=column.label)
        cell.font = required if column.required else bold
        cell.fill = PatternFill("solid", fgColor="DDEBF7")
        sheet.column_dimensions[letter].width = column.width
        if column.choices is None:
            continue
        lists.cell(row=1, column=index, value=column.label)
        for n, label in enumerate(column.choices, start=2):
            lists.cell(row=n, column=index, value=label)
        source = f"{LISTS}!${letter}$2:${letter}${len(column.choices) + 1}"
        validation = DataValidation(
            type="list",
            formula1=f"={source}",
            allow_blank=True,
            showErrorMessage=True,
            errorStyle="warning" if column.suggest_only else "stop",
            errorTitle=column.label,
            error=f"请从列表中选择{column.label}" + ("（或在目后加细目）" if column.suggest_only else ""),
        )
        validation.add(f"{letter}2:{letter}{MAX_ROWS + 1}")
        sheet.add_data_validation(validation)
    sheet.freeze_panes = "A2"

    for line in guide_lines:
        guide.append([line])
    guide["A1"].font = Font(bold=True, size=14)
    guide.append([])
    heads = ["列名", "必填", "说明", "示例"]
    guide.append(heads)
    for column in columns:
        guide.append([column.label, "是" if column.required else "否", column.help, column.example])
    if more:
        guide.append([])
        heads += more[0]
        for row in more:
            guide.append(row)
    for row in guide.iter_rows():
        for cell in row:
            cell.alignment = Alignment(wrap_text=True, vertical="top")
            if cell.value in heads:
                cell.font = bold
    for letter, width in zip("ABCD", (16, 8, 48, 40), strict=True):
        guide.column_dimensions[letter].width = width
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def write_xlsx(header: list[str], rows: Iterable[list[str]], sheet_name: str = SHEET) -> bytes:
    """A plain workbook of ``rows`` under ``header`` in the template's entry sheet (for tests and
    the benchmark, which build files a data administrator would)."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(sheet_name)
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()
