/*
 * libFuzzer target for src/jpeg_rows.c, Arbiter's own C: every input is decoded by the file's
 * Huffman decoder and by libjpeg's own, at full size and at one DCT scale, band by band, and the
 * two must agree. Built with AddressSanitizer and UndefinedBehaviorSanitizer by scripts/fuzz
 * (Debian's clang and its libFuzzer); libjpeg itself is the system's, not instrumented.
 *
 * What counts as a finding (the process aborts, libFuzzer keeps the input):
 * - anything the sanitizers report: a read or write out of bounds, a use after free, a leak,
 *   undefined behaviour (shifts, overflow, misaligned loads);
 * - the file's decoder finishing an image (not giving up, -2) with rows that differ from
 *   libjpeg's, or failing where libjpeg does not (or the reverse): its coefficients must be
 *   libjpeg's, bit for bit. What it decodes before giving up is thrown away by the worker, so
 *   it is not compared.
 * Images are bounded (MAX_PIXELS at the decoded scale) so that a header cannot ask for gigabytes.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct arbiter_jpeg;
struct arbiter_jpeg *arbiter_jpeg_new(void);
void arbiter_jpeg_free(struct arbiter_jpeg *h);
const char *arbiter_jpeg_message(const struct arbiter_jpeg *h);
int arbiter_jpeg_fast_huffman(const struct arbiter_jpeg *h);
int arbiter_jpeg_start(struct arbiter_jpeg *h, const unsigned char *data, unsigned long len,
                       unsigned denom, int fast, int components, unsigned *width,
                       unsigned *height);
int arbiter_jpeg_read(struct arbiter_jpeg *h, unsigned char *out, unsigned long stride,
                      int max_rows);
int arbiter_jpeg_finish(struct arbiter_jpeg *h);

#define MAX_PIXELS (4u << 20)
#define BAND 16

/* One decoding with one Huffman decoder, read a band at a time into the whole image: the
 * worker resizes the bands as they come, and when the file's decoder gives up it throws away
 * what it had and decodes again with libjpeg's, so only a decoding the file's decoder finishes
 * is compared. */
struct run {
    unsigned width, height;
    int failed;  /* libjpeg stopped with an error */
    int gave_up; /* the file's decoder gave up */
    int fast;    /* the file's decoder read the scan */
    unsigned rows;
    unsigned char *pixels;
};

static int decode(struct run *r, const uint8_t *data, size_t size, unsigned denom, int fast) {
    memset(r, 0, sizeof *r);
    struct arbiter_jpeg *h = arbiter_jpeg_new();
    if (h == NULL)
        return -1;
    int rc =
        arbiter_jpeg_start(h, data, (unsigned long)size, denom, fast, 3, &r->width, &r->height);
    if (rc != 0 || (unsigned long long)r->width * r->height > MAX_PIXELS || r->width == 0) {
        arbiter_jpeg_free(h);
        return -1;
    }
    r->fast = arbiter_jpeg_fast_huffman(h);
    size_t stride = (size_t)r->width * 3;
    r->pixels = calloc(r->height, stride);
    if (r->pixels == NULL) {
        arbiter_jpeg_free(h);
        return -1;
    }
    while (r->rows < r->height) {
        unsigned want = r->height - r->rows < BAND ? r->height - r->rows : BAND;
        int rows = arbiter_jpeg_read(h, r->pixels + r->rows * stride, stride, (int)want);
        if (rows == -2) {
            r->gave_up = 1;
            break;
        }
        if (rows <= 0) {
            r->failed = rows < 0;
            break;
        }
        r->rows += (unsigned)rows;
    }
    if (!r->failed && !r->gave_up && arbiter_jpeg_finish(h) != 0)
        r->failed = 1;
    arbiter_jpeg_free(h);
    return 0;
}

static void differential(const uint8_t *data, size_t size, unsigned denom) {
    struct run ours, theirs;
    if (decode(&ours, data, size, denom, 1) != 0) {
        free(ours.pixels);
        return;
    }
    if (decode(&theirs, data, size, denom, 0) != 0) {
        /* The same header read twice cannot be accepted once and refused once. */
        fprintf(stderr, "libjpeg refused a header the same code accepted\n");
        abort();
    }
    if (ours.width != theirs.width || ours.height != theirs.height)
        abort();
    if (ours.fast && !ours.gave_up) {
        /* Finished by the file's decoder: libjpeg's must have finished too, with the same
         * rows, else the worker answers otherwise than Pillow. */
        if (ours.failed != theirs.failed || ours.rows != theirs.rows) {
            fprintf(stderr, "ours: %u rows, failed %d; libjpeg: %u rows, failed %d\n", ours.rows,
                    ours.failed, theirs.rows, theirs.failed);
            abort();
        }
        if (memcmp(ours.pixels, theirs.pixels, (size_t)ours.rows * ours.width * 3) != 0) {
            fprintf(stderr, "pixels differ at 1/%u scale\n", denom);
            abort();
        }
    }
    free(ours.pixels);
    free(theirs.pixels);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    differential(data, size, 1);
    /* One DCT scale besides, chosen by the input so that every scale gets its share. */
    static const unsigned scales[3] = {2, 4, 8};
    differential(data, size, scales[size % 3]);
    return 0;
}
