/* The row scanner's inner loops in C: the optional accelerator of particle_rows.py.
 *
 * scan(raw, begin, stop, column, n_columns, line_ends, fields, classes, ok) -> lines
 *   Reads the lines of raw[begin:stop] (which ends with a newline). For line i it writes the offset
 *   of its newline (int64), its number of fields (int32; a field is a run of bytes > 32, as
 *   bytes.translate + split read them), the class number found in field `column` (int64) and ok
 *   (uint8): 1 when the line has exactly n_columns fields, no quote or '#', and the class field is
 *   1 to 18 plain digits. Lines with ok 0 are read again in Python (quotes, comments, blank lines,
 *   damaged rows), so this loop never decides what is an error.
 *
 * count_lines(raw, begin, stop) -> lines: the number of lines scan will find.
 *
 * copy_rows(raw, starts, ends, keep, out) -> length
 *   Copies raw[starts[i]:ends[i]] for every i with keep[i] into out, in order; returns the bytes
 *   written.
 *
 * Both take any C-contiguous buffer (bytearray, numpy array), check every size and offset, and
 * release the GIL while they run, so chunks are read on several threads at once. Without this
 * module (no compiler when installing), particle_rows.py does the same with numpy, more slowly.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__) && defined(__GNUC__)
#include <emmintrin.h>
#endif

#define WS 1        /* byte <= 32: a field separator */
#define SPECIAL 2   /* '"', '\'' or '#': the line needs starfile's tokenising */

static unsigned char kinds[256];

static int
check(Py_buffer *view, Py_ssize_t items, Py_ssize_t itemsize, const char *name)
{
    if (view->len < items * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, %zd needed", name, view->len,
                     items * itemsize);
        return -1;
    }
    return 0;
}

/* Fields of buf[p:end] (n), where field `column` starts (field_start, -1 if none) and whether the
 * line holds a quote or '#' (special). `limit`: bytes readable in buf (16-byte loads stay below). */
static void
line_fields(const unsigned char *buf, Py_ssize_t p, Py_ssize_t end, Py_ssize_t limit,
            Py_ssize_t column, Py_ssize_t *n_out, Py_ssize_t *start_out, int *special_out)
{
    Py_ssize_t n = 0, field_start = -1, q = p;
    int before = WS, special = 0;
#if defined(__SSE2__) && defined(__GNUC__)
    /* 16 bytes a step: blank and special bytes as bit masks, field starts = a non-blank byte
     * after a blank one; the field holding the class is found by its rank among the starts. */
    const __m128i blank = _mm_set1_epi8(32), dq = _mm_set1_epi8('"'), sq = _mm_set1_epi8('\''),
                  hash = _mm_set1_epi8('#');
    unsigned carry = 1;
    for (; q < end && q + 16 <= limit; q += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(buf + q));
        unsigned ws = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(v, blank), blank));
        unsigned sp = (unsigned)_mm_movemask_epi8(_mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v, dq), _mm_cmpeq_epi8(v, sq)), _mm_cmpeq_epi8(v, hash)));
        Py_ssize_t left = end - q;
        unsigned valid = left >= 16 ? 0xFFFFu : ((1u << left) - 1u);
        ws = (ws | ~valid) & 0xFFFFu;
        unsigned starts = ~ws & ((ws << 1) | carry) & 0xFFFFu;
        carry = ws >> 15;
        special |= (sp & valid) != 0;
        int count = __builtin_popcount(starts);
        if (field_start < 0 && n + count > column) {
            for (Py_ssize_t k = n; k < column; k++)
                starts &= starts - 1;
            field_start = q + __builtin_ctz(starts);
        }
        n += count;
    }
    if (q >= end) {
        *n_out = n, *start_out = field_start, *special_out = special;
        return;
    }
    before = carry ? WS : 0;
#endif
    for (; q < end; q++) {            /* one byte a step: the portable loop, and the last bytes */
        int kind = kinds[buf[q]];
        int starts = (before & WS) && !(kind & WS);
        if (starts && n == column)
            field_start = q;
        n += starts;
        special |= kind & SPECIAL;
        before = kind;
    }
    *n_out = n, *start_out = field_start, *special_out = special;
}

static PyObject *
count_lines(PyObject *self, PyObject *args)
{
    Py_buffer raw;
    Py_ssize_t begin, stop, lines = 0;
    if (!PyArg_ParseTuple(args, "y*nn", &raw, &begin, &stop))
        return NULL;
    if (begin < 0 || stop > raw.len || begin > stop) {
        PyBuffer_Release(&raw);
        PyErr_SetString(PyExc_ValueError, "begin/stop outside the buffer");
        return NULL;
    }
    const unsigned char *buf = (const unsigned char *)raw.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t p = begin; p < stop; lines++) {
        const unsigned char *nl = memchr(buf + p, '\n', (size_t)(stop - p));
        p = nl ? (Py_ssize_t)(nl - buf) + 1 : stop;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&raw);
    return PyLong_FromSsize_t(lines);
}

static PyObject *
scan(PyObject *self, PyObject *args)
{
    Py_buffer raw, ends_b, fields_b, classes_b, ok_b;
    Py_ssize_t begin, stop, column, n_columns;
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "y*nnnnw*w*w*w*", &raw, &begin, &stop, &column, &n_columns,
                          &ends_b, &fields_b, &classes_b, &ok_b))
        return NULL;
    Py_ssize_t capacity = ok_b.len;
    if (begin < 0 || stop > raw.len || begin > stop) {
        PyErr_SetString(PyExc_ValueError, "begin/stop outside the buffer");
        goto done;
    }
    if (check(&ends_b, capacity, 8, "line_ends") || check(&fields_b, capacity, 4, "fields")
        || check(&classes_b, capacity, 8, "classes"))
        goto done;

    const unsigned char *buf = (const unsigned char *)raw.buf;
    int64_t *line_ends = (int64_t *)ends_b.buf;
    int32_t *fields = (int32_t *)fields_b.buf;
    int64_t *classes = (int64_t *)classes_b.buf;
    unsigned char *ok = (unsigned char *)ok_b.buf;
    Py_ssize_t lines = 0;
    int overflow = 0;

    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t p = begin;
    while (p < stop) {
        const unsigned char *nl = memchr(buf + p, '\n', (size_t)(stop - p));
        Py_ssize_t end = nl ? (Py_ssize_t)(nl - buf) : stop;
        if (lines >= capacity) {
            overflow = 1;
            break;
        }
        Py_ssize_t n = 0, field_start = -1;
        int special = 0;
        line_fields(buf, p, end, raw.len, column, &n, &field_start, &special);
        int64_t value = 0;
        int good = !special && n == n_columns && field_start >= 0;
        if (good) {
            Py_ssize_t q = field_start, digits = 0;
            while (q < end && buf[q] >= '0' && buf[q] <= '9' && digits < 19) {
                value = value * 10 + (buf[q] - '0');
                q++;
                digits++;
            }
            good = digits >= 1 && digits <= 18 && (q == end || buf[q] <= 32);
        }
        line_ends[lines] = end;
        fields[lines] = (int32_t)(n > INT32_MAX ? INT32_MAX : n);
        classes[lines] = good ? value : 0;
        ok[lines] = (unsigned char)good;
        lines++;
        p = end + 1;
    }
    Py_END_ALLOW_THREADS

    if (overflow)
        PyErr_SetString(PyExc_ValueError, "more lines than the output arrays hold");
    else
        result = PyLong_FromSsize_t(lines);
done:
    PyBuffer_Release(&raw);
    PyBuffer_Release(&ends_b);
    PyBuffer_Release(&fields_b);
    PyBuffer_Release(&classes_b);
    PyBuffer_Release(&ok_b);
    return result;
}

static PyObject *
copy_rows(PyObject *self, PyObject *args)
{
    Py_buffer raw, starts_b, ends_b, keep_b, out;
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "y*y*y*y*w*", &raw, &starts_b, &ends_b, &keep_b, &out))
        return NULL;
    Py_ssize_t rows = keep_b.len;
    if (check(&starts_b, rows, 8, "starts") || check(&ends_b, rows, 8, "ends"))
        goto done;
    const char *src = (const char *)raw.buf;
    const int64_t *starts = (const int64_t *)starts_b.buf, *ends = (const int64_t *)ends_b.buf;
    const unsigned char *keep = (const unsigned char *)keep_b.buf;
    char *dst = (char *)out.buf;
    Py_ssize_t written = 0, bad = -1;

    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < rows; i++) {
        if (!keep[i])
            continue;
        int64_t s = starts[i], e = ends[i];
        if (s < 0 || e < s || e > raw.len || written + (e - s) > out.len) {
            bad = i;
            break;
        }
        memcpy(dst + written, src + s, (size_t)(e - s));
        written += e - s;
    }
    Py_END_ALLOW_THREADS

    if (bad >= 0)
        PyErr_Format(PyExc_ValueError, "row %zd is outside the buffer or the output is too small", bad);
    else
        result = PyLong_FromSsize_t(written);
done:
    PyBuffer_Release(&raw);
    PyBuffer_Release(&starts_b);
    PyBuffer_Release(&ends_b);
    PyBuffer_Release(&keep_b);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "Line ends, field counts, class numbers and ok flags of a chunk."},
    {"count_lines", count_lines, METH_VARARGS, "Lines of raw[begin:stop] (newlines, or a last line without)."},
    {"copy_rows", copy_rows, METH_VARARGS, "Copy the kept rows of a chunk into a buffer."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rowscan", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__rowscan(void)
{
    for (int b = 0; b < 256; b++)
        kinds[b] = (b <= 32 ? WS : 0) | ((b == '"' || b == '\'' || b == '#') ? SPECIAL : 0);
    return PyModule_Create(&module);
}
