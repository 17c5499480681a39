/*
 * Row-by-row JPEG decoding through libjpeg's own API, for `jpeg.rs`.
 *
 * TurboJPEG 2.1 (what the rest of `jpeg.rs` calls) only decodes a whole image into one buffer;
 * a 12-megapixel photo then needs 36 MB before it is resized to 224 x 224. libjpeg's scanline
 * API hands out a few rows at a time, which the resizer folds in as they come. The calls are the
 * ones tjDecompress2 makes (libjpeg-turbo 2.1's turbojpeg.c): jpeg_mem_src, jpeg_read_header,
 * out_color_space JCS_EXT_RGB, the scaling factor, jpeg_start_decompress, jpeg_read_scanlines,
 * jpeg_finish_decompress; default DCT method and upsampling. So the pixels are TurboJPEG's.
 *
 * libjpeg reports fatal errors by calling error_exit, which must not return: it longjmps back
 * into the function of this file that was called, which returns -1 with the message kept in the
 * handle. Warnings (corrupt but decodable data) are counted and the decoding goes on, as
 * TurboJPEG does without TJFLAG_STOPONWARNING. No Rust frame is ever crossed by the longjmp.
 */

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

struct arbiter_jpeg {
    struct jpeg_decompress_struct dinfo;
    struct jpeg_error_mgr jerr;
    jmp_buf on_error;
    char message[JMSG_LENGTH_MAX];
    int warnings;
    int started;
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
    free(h);
}

const char *arbiter_jpeg_message(const struct arbiter_jpeg *h) { return h->message; }

int arbiter_jpeg_warnings(const struct arbiter_jpeg *h) { return h->warnings; }

/* Reads the header of `len` bytes at `data` (which must stay valid until the handle is freed)
 * and starts decoding to RGB at 1/denom scale; the output size goes to *width, *height. */
int arbiter_jpeg_start(struct arbiter_jpeg *h, const unsigned char *data, unsigned long len,
                       unsigned denom, unsigned *width, unsigned *height) {
    if (setjmp(h->on_error))
        return -1;
    jpeg_mem_src(&h->dinfo, data, len);
    jpeg_read_header(&h->dinfo, TRUE);
    h->dinfo.out_color_space = JCS_EXT_RGB;
    h->dinfo.scale_num = 1;
    h->dinfo.scale_denom = denom;
    jpeg_start_decompress(&h->dinfo);
    h->started = 1;
    if (h->dinfo.output_components != 3) {
        snprintf(h->message, sizeof h->message, "decoded %d components, not RGB",
                 h->dinfo.output_components);
        return -1;
    }
    *width = h->dinfo.output_width;
    *height = h->dinfo.output_height;
    return 0;
}

/* Decodes up to `max_rows` rows into `out` (`stride` bytes per row); returns the number of rows
 * decoded (0 once all are), or -1. */
int arbiter_jpeg_read(struct arbiter_jpeg *h, unsigned char *out, unsigned long stride,
                      int max_rows) {
    if (setjmp(h->on_error))
        return -1;
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
