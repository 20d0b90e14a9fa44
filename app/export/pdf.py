"""The signed report as a PDF, drawn with Qt alone (``QTextDocument`` on a ``QPdfWriter``).

The page is A4 with 18 mm margins.  The first page starts with the title and
the header rows of :meth:`SignedReport.header_rows`; the report follows in
its own paragraphs, line breaks and spacing kept.  Every page ends with a
footer naming the patient, the accession and the page ("page 2 of 3"), so a
loose page still says whose it is.  Qt embeds a subset of each font with a
``ToUnicode`` map, so the text can be searched and copied; the file declares
PDF/A-1b (archival).

The PDF is rendered into memory and written with :func:`atomic_write_bytes`.
Qt's text layout needs a running ``QGuiApplication`` (the desktop application
has one); call it from the GUI thread.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QBuffer, QIODevice, QMarginsF, QPointF, QRectF, QSizeF, Qt
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetricsF,
    QGuiApplication,
    QPageLayout,
    QPageSize,
    QPaintDevice,
    QPainter,
    QPdfWriter,
    QPen,
    QTextBlock,
    QTextCursor,
    QTextDocument,
    QTextLine,
)

from app.export.files import ExportError, atomic_write_bytes
from app.export.text import TITLE, SignedReport

#: Device resolution of the PDF (dots per inch); text is vector, this sets layout precision.
RESOLUTION = 300
MARGINS_MM = (18.0, 18.0, 18.0, 18.0)  # left, top, right, bottom
BODY_POINTS = 10.5
HEADER_POINTS = 9.5
TITLE_POINTS = 15.0
FOOTER_POINTS = 8.0
#: Space between the header and the report, with the rule in its middle.
RULE_GAP_MM = 4.0


def render_report_pdf(report: SignedReport) -> bytes:
    """The PDF of ``report`` as bytes (starts with ``%PDF``)."""
    if QGuiApplication.instance() is None:
        raise ExportError("PDF export needs a running Qt application (QGuiApplication)")
    buffer = QBuffer()
    if not buffer.open(QIODevice.OpenModeFlag.WriteOnly):
        raise ExportError("cannot render the PDF: no memory buffer")
    writer = QPdfWriter(buffer)
    writer.setPdfVersion(QPdfWriter.PdfVersion.PdfVersion_A1b)
    writer.setResolution(RESOLUTION)
    left, top, right, bottom = MARGINS_MM
    writer.setPageLayout(
        QPageLayout(
            QPageSize(QPageSize.PageSizeId.A4),
            QPageLayout.Orientation.Portrait,
            QMarginsF(left, top, right, bottom),
            QPageLayout.Unit.Millimeter,
        )
    )
    ident = " ".join(p for p in (report.patient_id, report.accession_number) if p)
    writer.setTitle(f"{TITLE} {ident}".strip())
    writer.setCreator("Concord")

    painter = QPainter()
    if not painter.begin(writer):
        raise ExportError("cannot render the PDF: Qt's PDF writer did not start")
    try:
        _paint(painter, writer, report)
    finally:
        painter.end()
    buffer.close()
    data = bytes(buffer.data().data())
    if not data.startswith(b"%PDF"):
        raise ExportError("cannot render the PDF: Qt produced no PDF data")
    return data


def write_report_pdf(path: str | os.PathLike[str], report: SignedReport) -> Path:
    """Render ``report`` and write it to ``path`` atomically; returns the path.

    Raises :class:`ExportError` (one line) when the PDF cannot be rendered or written.
    """
    return atomic_write_bytes(path, render_report_pdf(report))


# ----------------------------------------------------------------------------- layout


def report_html(report: SignedReport) -> str:
    """The document as the small HTML subset ``QTextDocument`` renders."""
    rows = "".join(
        f'<tr><td style="padding-right:12px; color:#444444;">{html.escape(label)}</td>'
        f"<td><b>{html.escape(value)}</b></td></tr>"
        for label, value in report.header_rows()
    )
    paragraphs = "".join(
        f'<p style="white-space:pre-wrap; margin-top:0; margin-bottom:0;">'
        f"{html.escape(line) or '&nbsp;'}</p>"
        for line in _body_lines(report)
    )
    return (
        f'<p style="font-size:{TITLE_POINTS}pt; margin-bottom:6px;"><b>{html.escape(TITLE)}</b>'
        f' <span style="font-size:{HEADER_POINTS}pt; color:#444444;">({report.status})</span></p>'
        f'<table style="font-size:{HEADER_POINTS}pt;" cellspacing="0" cellpadding="1">{rows}</table>'
        f'<div style="font-size:{BODY_POINTS}pt;">{paragraphs}</div>'
    )


@dataclass
class PageLayout:
    """The report laid out on pages: each line with its page, and the header rule."""

    document: QTextDocument  # owns the lines; keep it alive while they are drawn
    first_body_block: QTextBlock
    lines: list[tuple[int, QPointF, QTextLine]]  # (page, origin to draw at, line)
    rule_y: float  # in document coordinates, like the lines
    body_height: float
    pages: int


def layout_report(
    report: SignedReport, device: QPaintDevice, width: float, body_height: float
) -> PageLayout:
    """Lay ``report`` out in pages of ``width`` x ``body_height`` device pixels of ``device``."""
    font = QFont(QGuiApplication.font())
    font.setPointSizeF(BODY_POINTS)
    # No ligatures: "effusion" stays six letters when searched or copied from the PDF.
    font.setFeature(QFont.Tag("liga"), 0)
    gap = RULE_GAP_MM / 25.4 * device.logicalDpiY()

    doc = QTextDocument()
    doc.documentLayout().setPaintDevice(device)  # measure fonts at the device's resolution
    doc.setDocumentMargin(0)
    doc.setDefaultFont(font)
    doc.setHtml(report_html(report))
    first_body = doc.findBlockByNumber(doc.blockCount() - len(_body_lines(report)))
    block_format = first_body.blockFormat()
    block_format.setTopMargin(gap)
    QTextCursor(first_body).setBlockFormat(block_format)
    doc.setPageSize(QSizeF(width, body_height))  # paginates: no line crosses a page edge

    layout = doc.documentLayout()
    lines: list[tuple[int, QPointF, QTextLine]] = []
    block = doc.begin()
    while block.isValid():
        text_layout = block.layout()
        origin = layout.blockBoundingRect(block).topLeft() - text_layout.boundingRect().topLeft()
        for i in range(text_layout.lineCount()):
            line = text_layout.lineAt(i)
            middle = origin.y() + line.y() + line.height() / 2
            lines.append((int(middle // body_height), origin, line))
        block = block.next()
    rule_y = layout.blockBoundingRect(first_body).top() - gap / 2  # the rect leaves out the margin
    pages = max(1, doc.pageCount(), *(page + 1 for page, _, _ in lines))
    return PageLayout(doc, first_body, lines, rule_y, body_height, pages)


def _paint(painter: QPainter, writer: QPaintDevice, report: SignedReport) -> None:
    """Draw each page of ``report``: its lines, the header rule on the first, the footer.

    The lines are drawn one by one on the page that holds them.  (Drawing each
    page with ``QTextDocument.drawContents`` and a clip would hide, but still
    write into the PDF, the lines of a paragraph that runs on from or onto
    the next page: a search or a copy would find them twice.)
    """
    footer_font = QFont(QGuiApplication.font())
    footer_font.setPointSizeF(FOOTER_POINTS)
    footer_height = QFontMetricsF(footer_font, writer).height() * 2.5
    width = float(writer.width())
    body_height = float(writer.height()) - footer_height
    if body_height <= footer_height:
        raise ExportError("cannot render the PDF: the page is too small")
    pages = layout_report(report, writer, width, body_height)
    rule_page = int(pages.rule_y // body_height)
    rule_pen = QPen(QColor("black"), writer.logicalDpiY() / 100)  # about 0.25 mm
    ident = f"Patient ID {report.patient_id or '-'} · Accession {report.accession_number or '-'}"
    for page in range(pages.pages):
        if page and not writer.newPage():
            raise ExportError("cannot render the PDF: Qt could not start a new page")
        painter.save()
        painter.translate(0, -page * body_height)
        painter.setPen(QColor("black"))
        for line_page, origin, line in pages.lines:
            if line_page == page:
                line.draw(painter, origin)
        if page == rule_page:
            painter.setPen(rule_pen)
            painter.drawLine(QPointF(0, pages.rule_y), QPointF(width, pages.rule_y))
        painter.restore()
        footer = QRectF(0, body_height, width, footer_height)
        painter.setFont(footer_font)
        painter.setPen(QColor("gray"))
        bottom = Qt.AlignmentFlag.AlignBottom
        painter.drawText(footer, int(bottom | Qt.AlignmentFlag.AlignLeft), ident)
        painter.drawText(
            footer, int(bottom | Qt.AlignmentFlag.AlignRight), f"page {page + 1} of {pages.pages}"
        )


def _body_lines(report: SignedReport) -> list[str]:
    return report.body().split("\n")
