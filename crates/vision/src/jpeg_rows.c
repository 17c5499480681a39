/*
 * Row-by-row JPEG decoding through libjpeg's own API, for `jpeg/banded.rs` and `jpeg/whole.rs`
 * (its Rust side is `jpeg/rows.rs`): the one binding of libjpeg in Arbiter.
 *
 * libjpeg's scanline API hands out a few rows at a time, which the resizer folds in as they
 * come: a 12-megapixel photo is never held whole before it is resized to 224 x 224 (a whole
 * decode, when one is needed, reads every row into one buffer). The calls are the ones
 * TurboJPEG's tjDecompress2 makes (libjpeg-turbo 2.1's turbojpeg.c), which Pillow's pixels were
 * checked against: jpeg_mem_src, jpeg_read_header, out_color_space (JCS_EXT_RGB, JCS_GRAYSCALE or
 * JCS_CMYK), the scaling factor, jpeg_start_decompress, jpeg_read_scanlines,
 * jpeg_finish_decompress; default DCT method and upsampling.
 *
 * libjpeg reports fatal errors by calling error_exit, which must not return: it longjmps back
 * into the function of this file that was called, which returns -1 with the message kept in the
 * handle. Warnings (corrupt but decodable data) are counted and the decoding goes on, as
 * TurboJPEG does without TJFLAG_STOPONWARNING and Pillow does. No Rust frame is ever crossed by the longjmp.
 *
 * Huffman decoding. Reading the entropy-coded data is where libjpeg-turbo 2.1 spends most of its
 * time on a photo, and its decoder is slower than it needs to be: it refills its bit buffer a
 * byte at a time, looking for 0xFF in each, and decodes a coefficient in three dependent steps
 * (code, then magnitude bits, then sign). For a baseline scan (one interleaved scan, Huffman, no
 * restart markers: what cameras and phones write), this file decodes the coefficients itself: the
 * scan's bytes are first copied without their stuffed zero bytes, so the bit buffer refills eight
 * bytes at a time without a test; one table lookup of the next FAST_BITS bits gives a coefficient
 * whole (code, run, magnitude and sign) when they fit, as most do, and two when both fit (the
 * measurements behind this are in docs/vision.md). The coefficients are the same ones
 * (Huffman coding is lossless), stored where libjpeg's decoder stores them, and libjpeg does the
 * rest (dequantization, IDCT, upsampling, color), so the pixels are unchanged. It takes over
 * libjpeg's decode_mcu method, which libjpeg calls once per MCU (jpegint.h's
 * jpeg_entropy_decoder). Anything it does not handle the way libjpeg does, it refuses: a code that
 * is in no table, data that ends (or meets a marker) before the last MCU, a DC value out of any
 * real range. It then stops the decoding (arbiter_jpeg_read returns -2), and the caller decodes
 * the image again with libjpeg's own decoder, which has its own rules for corrupt data.
 */

#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
/* After jpeglib.h: the struct jpeg_entropy_decoder whose decode_mcu is replaced. */
#include <jpegint.h>

/* The Huffman decoder below takes over libjpeg's through jpegint.h, libjpeg's private header:
 * the entropy decoder's method table and the decompressor's fields it reads are those of
 * libjpeg-turbo 2.1 (Debian 12's 2.1.5), which it was written and fuzzed against. With any other
 * version it is left out at compile time (a warning says so) and libjpeg decodes every scan, so a
 * change in those private structures can never be read wrongly. */
#if defined(LIBJPEG_TURBO_VERSION_NUMBER) && LIBJPEG_TURBO_VERSION_NUMBER >= 2001000 &&            \
    LIBJPEG_TURBO_VERSION_NUMBER < 2002000
#define OWN_HUFFMAN 1
#else
#define OWN_HUFFMAN 0
#warning "not libjpeg-turbo 2.1: Arbiter's own Huffman decoder is left out, libjpeg decodes every scan"
#endif

/* Bits looked up at once; codes and coefficients longer than this take a slower path. */
#define FAST_BITS 11
/* A fast table entry is one of:
 * - a whole coefficient (WHOLE): bits 0-5 the bits it takes, 8-14 the zeros before it (an
 *   end-of-block is a run of 64, a ZRL one of 15), 16-21 0, 32-47 its value, 48-63 its value
 *   again (so that a lone coefficient reads as a pair of the same one, see TAKE_WHOLE);
 * - two whole coefficients (WHOLE | PAIR), the first not an end-of-block: bits 0-5 the bits
 *   both take, 8-14 the zeros before the first, 16-21 how far the second is from the first (1 +
 *   its zeros; 63 for an end-of-block), 32-47 and 48-63 the values;
 * - a symbol whose magnitude bits do not fit: the symbol << 8 | its code length;
 * - 0: a code longer than FAST_BITS. */
#define WHOLE 0x40
#define PAIR 0x80
/* Zero bytes after the copied scan, more than one block can read past its end (64 coefficients
 * of at most 31 bits), so that running off the end is caught after the block, not read past. */
#define PAD_BYTES 512

struct huffman_table {
    int64_t fast[1 << FAST_BITS];
    /* For longer codes, as libjpeg's jdhuff.c: the largest code of each length (-1: none), and
     * what maps a code of that length to its index in huffval. */
    int32_t maxcode[18];
    int32_t valoffset[17];
    uint8_t huffval[256];
};

struct huffman {
    struct huffman_table tables[2][NUM_HUFF_TBLS]; /* [0]: DC, [1]: AC */
    const struct huffman_table *dc[MAX_COMPS_IN_SCAN], *ac[MAX_COMPS_IN_SCAN];
    int last_dc[MAX_COMPS_IN_SCAN];
    uint8_t *data;     /* the scan without stuffed bytes, then PAD_BYTES zeros */
    size_t bits;       /* the bits of data that are the scan's */
    const uint8_t *at; /* the next byte of data for the bit buffer */
    uint64_t buffer;   /* the next bits, from the top; below the n valid ones, the ones after */
    int n;
    const uint8_t *marker; /* in the input: the marker after the scan */
    unsigned long mcus, total;
    int active; /* decode_mcu is this file's */
    int gave_up;
};

struct arbiter_jpeg {
    struct jpeg_decompress_struct dinfo;
    struct jpeg_error_mgr jerr;
    jmp_buf on_error;
    char message[JMSG_LENGTH_MAX];
    int warnings;
    int started;
    struct huffman huffman;
};

static void on_error_exit(j_common_ptr cinfo) {
    struct arbiter_jpeg *h = (struct arbiter_jpeg *)cinfo->client_data;
    (*cinfo->err->format_message)(cinfo, h->message);
    longjmp(h->on_error, 1);
}

static void on_message(j_common_ptr cinfo, int msg_level) {
    struct arbiter_jpeg *h = (struct arbiter_jpeg *)cinfo->client_data;
    if (msg_level < 0) {
        h->warnings++;
        if (h->message[0] == '\0')
            (*cinfo->err->format_message)(cinfo, h->message);
    }
}

/* The setjmp of each entry point is in a function whose locals do not change after it, so that
 * none is left indeterminate by the longjmp (C11 7.13.2.1). */
static int create(struct arbiter_jpeg *h) {
    if (setjmp(h->on_error))
        return -1;
    jpeg_create_decompress(&h->dinfo);
    return 0;
}

static int read_rows(struct arbiter_jpeg *h, unsigned char *out, unsigned long stride,
                     int max_rows) {
    JSAMPROW pointers[16];
    int rows = 0;
    while (rows < max_rows && h->dinfo.output_scanline < h->dinfo.output_height) {
        int want = max_rows - rows < 16 ? max_rows - rows : 16;
        for (int i = 0; i < want; i++)
            pointers[i] = out + (unsigned long)(rows + i) * stride;
        rows += (int)jpeg_read_scanlines(&h->dinfo, pointers, (JDIMENSION)want);
    }
    return rows;
}

/* ---- Huffman decoding of baseline scans ---- */

/* libjpeg's jpeg_natural_order: the zigzag index of each coefficient in the block; past 63 (a
 * corrupt run), 63, as libjpeg's table has for the same reason. Up to 127: an end-of-block is a
 * run of 64 zeros here (see build_table). */
static const int natural_order[128] = {
    0,  1,  8,  16, 9,  2,  3,  10, 17, 24, 32, 25, 18, 11, 4,  5,  12, 19, 26, 33, 40, 48,
    41, 34, 27, 20, 13, 6,  7,  14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23,
    30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63, 63, 63,
    63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
    63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
    63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63};

/* JPEG's EXTEND: s magnitude bits v as a signed value. */
static inline int extend(int v, int s) { return v < (1 << (s - 1)) ? v - (1 << s) + 1 : v; }

/* Builds the lookup of one DHT table; -1 for a table libjpeg would refuse too. */
static int build_table(struct huffman_table *t, const JHUFF_TBL *src, int is_dc) {
    int size[257], count = 0;
    unsigned code[257];
    for (int l = 1; l <= 16; l++)
        for (int i = 0; i < src->bits[l]; i++) {
            if (count >= 256)
                return -1;
            size[count++] = l;
        }
    size[count] = 0;
    /* The canonical codes, as jdhuff.c's jpeg_make_d_derived_tbl. */
    unsigned c = 0;
    for (int p = 0, l = size[0]; size[p]; l++) {
        while (size[p] == l)
            code[p++] = c++;
        if (c >= 1u << l)
            return -1;
        c <<= 1;
    }
    for (int l = 1, p = 0; l <= 16; l++) {
        t->valoffset[l] = 0;
        t->maxcode[l] = -1;
        if (src->bits[l]) {
            t->valoffset[l] = p - (int)code[p];
            p += src->bits[l];
            t->maxcode[l] = (int)code[p - 1];
        }
    }
    memcpy(t->huffval, src->huffval, sizeof t->huffval);
    memset(t->fast, 0, sizeof t->fast);
    for (int p = 0; p < count; p++) {
        int l = size[p], symbol = src->huffval[p];
        if (is_dc && symbol > 15)
            return -1;
        if (l > FAST_BITS)
            continue;
        int run = is_dc ? 0 : symbol >> 4, s = is_dc ? symbol : symbol & 15;
        /* No magnitude: a zero run of 16 (ZRL: 15 plus the loop's own step), or the end of the
         * block (EOB: a run that takes the index past 63, storing a 0 at 63, which is still
         * 0 then since nothing came after it). */
        if (!is_dc && s == 0)
            run = run == 15 ? 15 : 64;
        int first = (int)code[p] << (FAST_BITS - l);
        for (int i = 0; i < 1 << (FAST_BITS - l); i++) {
            int bits = first + i;
            if (l + s <= FAST_BITS) {
                int value = s ? extend((bits >> (FAST_BITS - l - s)) & ((1 << s) - 1), s) : 0;
                uint64_t v = (uint16_t)value;
                t->fast[bits] = (int64_t)(v << 48 | v << 32 | (uint64_t)run << 8 | WHOLE | (l + s));
            } else {
                t->fast[bits] = symbol << 8 | l;
            }
        }
    }
    if (is_dc)
        return 0;
    /* Pairs: a whole coefficient (not an end-of-block) followed by another within FAST_BITS. */
    int64_t single[1 << FAST_BITS];
    memcpy(single, t->fast, sizeof single);
    for (int bits = 0; bits < 1 << FAST_BITS; bits++) {
        int64_t a = single[bits];
        int len = (int)(a & 0x3F), run = (int)(a >> 8) & 0x7F;
        if (!(a & WHOLE) || run == 64)
            continue;
        int64_t b = single[(bits << len) & ((1 << FAST_BITS) - 1)];
        int len_b = (int)(b & 0x3F), run_b = (int)(b >> 8) & 0x7F;
        if (!(b & WHOLE) || len + len_b > FAST_BITS)
            continue;
        uint64_t step = run_b == 64 ? 63 : 1 + run_b;
        t->fast[bits] = (int64_t)(((uint64_t)b >> 48) << 48 | ((uint64_t)a >> 32 & 0xFFFF) << 32 |
                                  step << 16 | (uint64_t)run << 8 | WHOLE | PAIR | (len + len_b));
    }
    return 0;
}

static inline uint64_t load_be64(const uint8_t *p) {
    uint64_t w;
    memcpy(&w, p, sizeof w);
    return __builtin_bswap64(w);
}

/* Tops the bit buffer up to 56-63 bits. The bits below the valid ones are always the data's next
 * ones, so eight bytes are ORed in and `at` moves only over the whole bytes taken. */
#define REFILL()                                                                                   \
    do {                                                                                           \
        buffer |= load_be64(at) >> n;                                                              \
        at += (63 - n) >> 3;                                                                       \
        n |= 56;                                                                                   \
    } while (0)
#define PEEK(k) ((int)(buffer >> (64 - (k))))
#define SKIP(k) (buffer <<= (k), n -= (k))

static void give_up(struct arbiter_jpeg *h) {
    h->huffman.gave_up = 1;
    snprintf(h->message, sizeof h->message, "the fast Huffman decoder gave up");
    longjmp(h->on_error, 1);
}

/* The symbol of the code at the top of the buffer, looked up as libjpeg's jpeg_huff_decode
 * does, from codes of `length` bits up (FAST_BITS + 1 when the fast table had no entry). Needs 16
 * bits in the buffer. */
#define SLOW_SYMBOL(t, length, symbol)                                                             \
    do {                                                                                           \
        int code_ = PEEK(16), l_ = (length);                                                       \
        while (l_ <= 16 && (code_ >> (16 - l_)) > (t)->maxcode[l_])                                \
            l_++;                                                                                  \
        if (l_ > 16)                                                                               \
            give_up(h);                                                                            \
        symbol = (t)->huffval[((code_ >> (16 - l_)) + (t)->valoffset[l_]) & 0xFF];                 \
        SKIP(l_);                                                                                  \
    } while (0)

/* A symbol that the fast entry e did not give whole. Needs 16 bits in the buffer. */
#define DECODE_SYMBOL(t, e, symbol)                                                                \
    do {                                                                                           \
        if (e) {                                                                                   \
            SKIP(e & 0x3F);                                                                        \
            symbol = (e >> 8) & 0xFF;                                                              \
        } else {                                                                                   \
            SLOW_SYMBOL(t, FAST_BITS + 1, symbol);                                                 \
        }                                                                                          \
    } while (0)

/* s (1-15) magnitude bits, extended. */
#define GET_VALUE(s, v)                                                                            \
    do {                                                                                           \
        int bits_ = PEEK(s);                                                                       \
        SKIP(s);                                                                                   \
        v = extend(bits_, s);                                                                      \
    } while (0)

/* Stores the one or two coefficients of the whole entry e, k at the last one; a lone coefficient
 * is stored twice in the same place. Where the first ends the block (k reaches 63: the last
 * coefficient, an end-of-block, or a corrupt run), only the first is taken, and the block is done:
 * a pair's second coefficient belongs to the next block then. Needs 31 bits in the buffer. */
#define TAKE_WHOLE(e)                                                                              \
    do {                                                                                           \
        int k1_ = k + (int)((e >> 8) & 0x7F);                                                      \
        if (k1_ >= 63) {                                                                           \
            if (e & PAIR) {                                                                        \
                int symbol_, v_ = 0;                                                               \
                SLOW_SYMBOL(ac, 1, symbol_);                                                       \
                if (symbol_ & 15)                                                                  \
                    GET_VALUE(symbol_ & 15, v_);                                                   \
                block[natural_order[k1_]] = (JCOEF)v_;                                             \
            } else {                                                                               \
                SKIP(e & 0x3F);                                                                    \
                block[natural_order[k1_]] = (JCOEF)(e >> 32);                                      \
            }                                                                                      \
            goto block_done;                                                                       \
        }                                                                                          \
        SKIP(e & 0x3F);                                                                            \
        block[natural_order[k1_]] = (JCOEF)(e >> 32);                                              \
        k = k1_ + (int)((e >> 16) & 0x3F);                                                         \
        block[natural_order[k]] = (JCOEF)(e >> 48);                                                \
    } while (0)

/* libjpeg's decode_mcu for a baseline scan: the MCU's blocks, in natural order, not
 * dequantized, into blocks libjpeg has zeroed. */
static boolean decode_mcu(j_decompress_ptr cinfo, JBLOCKROW *MCU_data) {
    struct arbiter_jpeg *h = (struct arbiter_jpeg *)cinfo->client_data;
    struct huffman *f = &h->huffman;
    uint64_t buffer = f->buffer;
    int n = f->n;
    const uint8_t *at = f->at;
    for (int b = 0; b < cinfo->blocks_in_MCU; b++) {
        JCOEF *block = MCU_data[b][0];
        int ci = cinfo->MCU_membership[b];
        const struct huffman_table *dc = f->dc[ci], *ac = f->ac[ci];
        REFILL();
        int diff = 0;
        int64_t e = dc->fast[PEEK(FAST_BITS)];
        if (e & WHOLE) {
            SKIP(e & 0x3F);
            diff = (int16_t)(e >> 32);
        } else {
            int s;
            DECODE_SYMBOL(dc, e, s);
            if (s)
                GET_VALUE(s, diff);
        }
        /* libjpeg lets a corrupt stream's DC sum overflow; leave such streams to it. */
        int dc_value = f->last_dc[ci] + diff;
        if (dc_value > 1 << 20 || dc_value < -(1 << 20))
            give_up(h);
        f->last_dc[ci] = dc_value;
        block[0] = (JCOEF)dc_value;
        for (int k = 1; k < 64; k++) {
            REFILL();
            e = ac->fast[PEEK(FAST_BITS)];
            if (e & WHOLE) {
                TAKE_WHOLE(e);
                /* That took at most FAST_BITS bits: the next lookup needs no refill. */
                if (++k >= 64)
                    break;
                e = ac->fast[PEEK(FAST_BITS)];
                if (e & WHOLE) {
                    TAKE_WHOLE(e);
                    continue;
                }
            }
            int symbol;
            DECODE_SYMBOL(ac, e, symbol);
            int run = symbol >> 4, s = symbol & 15;
            if (s) {
                int v;
                k += run;
                GET_VALUE(s, v);
                block[natural_order[k]] = (JCOEF)v;
            } else {
                if (run != 15)
                    break;
                k += 15;
            }
        }
    block_done:
        /* Bits past the scan's end (libjpeg would read zeros and warn). */
        if ((size_t)(at - f->data) * 8 - (size_t)n > f->bits)
            give_up(h);
    }
    f->buffer = buffer;
    f->n = n;
    f->at = at;
    if (++f->mcus == f->total) {
        /* The scan is read: libjpeg goes on from the marker after it, as after its own decoder. */
        cinfo->src->bytes_in_buffer -= (size_t)(f->marker - cinfo->src->next_input_byte);
        cinfo->src->next_input_byte = f->marker;
    }
    return TRUE;
}

/* Copies the scan at src (up to the marker that ends it, or len) without its stuffed zero bytes,
 * as libjpeg's decoder reads it: 0xFF then 0x00 is one 0xFF byte of data; 0xFF, any 0xFF fill
 * bytes, then anything else is the marker. Returns -1 (the scan is left to libjpeg) when out of
 * memory, or on fill bytes before a stuffed zero. */
static int copy_scan(struct huffman *f, const uint8_t *src, size_t len) {
    free(f->data);
    f->data = malloc(len + PAD_BYTES);
    if (f->data == NULL)
        return -1;
    const uint8_t *in = src, *end = src + len;
    uint8_t *out = f->data;
    f->marker = end;
    while (in < end) {
        const uint8_t *ff = memchr(in, 0xFF, (size_t)(end - in));
        const uint8_t *stop = ff != NULL ? ff : end;
        memcpy(out, in, (size_t)(stop - in));
        out += stop - in;
        if (ff == NULL)
            break;
        const uint8_t *next = ff + 1;
        while (next < end && *next == 0xFF)
            next++;
        if (next == end || *next != 0) {
            f->marker = ff;
            break;
        }
        /* Fill bytes before a stuffed zero (0xFF 0xFF ... 0x00): no encoder writes them, and
         * libjpeg-turbo 2.1 decodes them two ways (its fast path takes the second 0xFF for a
         * marker, gives the MCU up after writing coefficients into its blocks, and its slow path
         * decodes the MCU again over them). Found by scripts/fuzz
         * (crates/vision/fuzz/crashes/): such a scan is left to libjpeg, so the pixels are
         * Pillow's whatever libjpeg makes of it. */
        if (next != ff + 1)
            return -1;
        *out++ = 0xFF;
        in = next + 1;
    }
    f->bits = (size_t)(out - f->data) * 8;
    memset(out, 0, PAD_BYTES);
    return 0;
}

/* Takes over the Huffman decoding of a baseline scan, just started; does nothing for any other
 * (progressive, arithmetic, restart markers, several scans, 12-bit). */
static void take_over_huffman(struct arbiter_jpeg *h) {
    j_decompress_ptr cinfo = &h->dinfo;
    struct huffman *f = &h->huffman;
    if (!OWN_HUFFMAN || cinfo->progressive_mode || cinfo->arith_code || cinfo->restart_interval != 0 ||
        cinfo->data_precision != 8 || cinfo->comps_in_scan != cinfo->num_components ||
        cinfo->Ss != 0 || cinfo->Se != 63 || cinfo->Ah != 0 || cinfo->Al != 0 ||
        cinfo->unread_marker != 0 || cinfo->entropy == NULL || cinfo->src == NULL)
        return;
    int built[2][NUM_HUFF_TBLS] = {{0}};
    for (int ci = 0; ci < cinfo->comps_in_scan; ci++) {
        const jpeg_component_info *comp = cinfo->cur_comp_info[ci];
        if (!comp->component_needed)
            return;
        int number[2] = {comp->dc_tbl_no, comp->ac_tbl_no};
        for (int ac = 0; ac < 2; ac++) {
            if (number[ac] < 0 || number[ac] >= NUM_HUFF_TBLS)
                return;
            const JHUFF_TBL *table =
                ac ? cinfo->ac_huff_tbl_ptrs[number[ac]] : cinfo->dc_huff_tbl_ptrs[number[ac]];
            if (table == NULL)
                return;
            if (!built[ac][number[ac]] && build_table(&f->tables[ac][number[ac]], table, !ac) != 0)
                return;
            built[ac][number[ac]] = 1;
        }
        f->dc[ci] = &f->tables[0][number[0]];
        f->ac[ci] = &f->tables[1][number[1]];
        f->last_dc[ci] = 0;
    }
    if (copy_scan(f, cinfo->src->next_input_byte, cinfo->src->bytes_in_buffer) != 0)
        return;
    f->at = f->data;
    f->buffer = 0;
    f->n = 0;
    f->mcus = 0;
    f->total = (unsigned long)cinfo->MCUs_per_row * cinfo->MCU_rows_in_scan;
    cinfo->entropy->decode_mcu = decode_mcu;
    f->active = 1;
}

struct arbiter_jpeg *arbiter_jpeg_new(void) {
    struct arbiter_jpeg *h = calloc(1, sizeof(struct arbiter_jpeg));
    if (h == NULL)
        return NULL;
    h->dinfo.err = jpeg_std_error(&h->jerr);
    h->jerr.error_exit = on_error_exit;
    h->jerr.emit_message = on_message;
    h->dinfo.client_data = h;
    if (create(h) != 0) {
        free(h);
        return NULL;
    }
    return h;
}

void arbiter_jpeg_free(struct arbiter_jpeg *h) {
    if (h == NULL)
        return;
    if (setjmp(h->on_error) == 0)
        jpeg_destroy_decompress(&h->dinfo);
    free(h->huffman.data);
    free(h);
}

const char *arbiter_jpeg_message(const struct arbiter_jpeg *h) { return h->message; }

int arbiter_jpeg_warnings(const struct arbiter_jpeg *h) { return h->warnings; }

/* Whether this file's Huffman decoder was built (libjpeg-turbo 2.1, see OWN_HUFFMAN). */
int arbiter_jpeg_own_huffman_built(void) { return OWN_HUFFMAN; }

/* Whether this file's Huffman decoder reads the scan (after arbiter_jpeg_start). */
int arbiter_jpeg_fast_huffman(const struct arbiter_jpeg *h) { return h->huffman.active; }

/* Reads the header of `len` bytes at `data` (which must stay valid until the handle is freed)
 * and starts decoding at 1/denom scale to `components` bytes a pixel: 1 gray, 3 RGB, 4 CMYK (as
 * libjpeg hands it out, Adobe-inverted), with this file's Huffman decoder if `fast` and the scan
 * is one it takes; the output size goes to *width, *height. */
int arbiter_jpeg_start(struct arbiter_jpeg *h, const unsigned char *data, unsigned long len,
                       unsigned denom, int fast, int components, unsigned *width,
                       unsigned *height) {
    if (setjmp(h->on_error))
        return -1;
    J_COLOR_SPACE space;
    switch (components) {
    case 1: space = JCS_GRAYSCALE; break;
    case 3: space = JCS_EXT_RGB; break;
    case 4: space = JCS_CMYK; break;
    default:
        snprintf(h->message, sizeof h->message, "no output of %d components", components);
        return -1;
    }
    jpeg_mem_src(&h->dinfo, data, len);
    jpeg_read_header(&h->dinfo, TRUE);
    h->dinfo.out_color_space = space;
    h->dinfo.scale_num = 1;
    h->dinfo.scale_denom = denom;
    jpeg_start_decompress(&h->dinfo);
    h->started = 1;
    if (fast)
        take_over_huffman(h);
    if (h->dinfo.output_components != components) {
        snprintf(h->message, sizeof h->message, "decoded %d components, not %d",
                 h->dinfo.output_components, components);
        return -1;
    }
    *width = h->dinfo.output_width;
    *height = h->dinfo.output_height;
    return 0;
}

/* Decodes up to `max_rows` rows into `out` (`stride` bytes per row); returns the number of rows
 * decoded (0 once all are), -1 on an error, or -2 if this file's Huffman decoder gave up (the
 * handle is then done with: decode again without it). */
int arbiter_jpeg_read(struct arbiter_jpeg *h, unsigned char *out, unsigned long stride,
                      int max_rows) {
    if (setjmp(h->on_error))
        return h->huffman.gave_up ? -2 : -1;
    return read_rows(h, out, stride, max_rows);
}

/* Ends the decoding (reads to the end of the image). */
int arbiter_jpeg_finish(struct arbiter_jpeg *h) {
    if (setjmp(h->on_error))
        return -1;
    if (h->started)
        jpeg_finish_decompress(&h->dinfo);
    h->started = 0;
    return 0;
}
