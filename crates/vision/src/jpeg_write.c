/*
 * JPEG encoding through libjpeg's compression API, for the tests only (`jpeg/rows.rs` declares it
 * under cfg(test); the linker drops it from everything else): RGB pixels at a quality and a luma
 * sampling factor, as TurboJPEG's tjCompress2 sets them up, so the tests can make JPEGs of every
 * chroma subsampling (4:4:4, 4:2:2, 4:2:0, 4:4:0, 4:1:1) that Pillow cannot all write.
 */

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

#include <jpeglib.h>

struct writer {
    struct jpeg_compress_struct cinfo;
    struct jpeg_error_mgr jerr;
    jmp_buf on_error;
};

static void on_error_exit(j_common_ptr cinfo) {
    struct writer *w = (struct writer *)cinfo->client_data;
    longjmp(w->on_error, 1);
}

/* Compresses `width x height` RGB pixels; the JPEG goes to *out (free it with
 * arbiter_jpeg_write_free), its length to *out_len. Returns 0, or -1 on any error. */
static int compress(struct writer *w, const unsigned char *rgb, unsigned width, unsigned height,
                    int quality, int h_samp, int v_samp, unsigned char **out,
                    unsigned long *out_len) {
    if (setjmp(w->on_error))
        return -1;
    jpeg_create_compress(&w->cinfo);
    jpeg_mem_dest(&w->cinfo, out, out_len);
    w->cinfo.image_width = width;
    w->cinfo.image_height = height;
    w->cinfo.input_components = 3;
    w->cinfo.in_color_space = JCS_RGB;
    jpeg_set_defaults(&w->cinfo);
    jpeg_set_quality(&w->cinfo, quality, TRUE);
    w->cinfo.comp_info[0].h_samp_factor = h_samp;
    w->cinfo.comp_info[0].v_samp_factor = v_samp;
    jpeg_start_compress(&w->cinfo, TRUE);
    while (w->cinfo.next_scanline < height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)w->cinfo.next_scanline * width * 3);
        jpeg_write_scanlines(&w->cinfo, &row, 1);
    }
    jpeg_finish_compress(&w->cinfo);
    return 0;
}

int arbiter_jpeg_write(const unsigned char *rgb, unsigned width, unsigned height, int quality,
                       int h_samp, int v_samp, unsigned char **out, unsigned long *out_len) {
    struct writer *w = calloc(1, sizeof *w);
    if (w == NULL)
        return -1;
    w->cinfo.err = jpeg_std_error(&w->jerr);
    w->jerr.error_exit = on_error_exit;
    w->cinfo.client_data = w;
    *out = NULL;
    *out_len = 0;
    int rc = compress(w, rgb, width, height, quality, h_samp, v_samp, out, out_len);
    jpeg_destroy_compress(&w->cinfo);
    free(w);
    return rc;
}

void arbiter_jpeg_write_free(unsigned char *buffer) { free(buffer); }
