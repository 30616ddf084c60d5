/* The allocator export the preview1 component adapter calls for its own
 * state. Without it the adapter grows linear memory by itself, and this
 * wasi-libc's dlmalloc, which on its first malloc takes every page up to
 * the current memory size as its own, would hand out the adapter's pages
 * too. Going through malloc keeps one owner for the heap. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MALLOC_ALIGN 16

__attribute__((export_name("cabi_realloc"))) void *cabi_realloc(void *old, size_t old_size,
                                                                size_t align, size_t new_size) {
    if (new_size == 0) {
        free(old);
        /* Any non-null pointer of the right alignment stands for nothing. */
        return (void *)(uintptr_t)(align ? align : 1);
    }
    void *p;
    if (align <= MALLOC_ALIGN) {
        p = realloc(old, new_size);
    } else {
        p = aligned_alloc(align, (new_size + align - 1) / align * align);
        if (p != NULL && old != NULL) {
            memcpy(p, old, old_size < new_size ? old_size : new_size);
            free(old);
        }
    }
    if (p == NULL) {
        abort();
    }
    return p;
}
