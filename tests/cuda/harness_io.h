// Binary file I/O shared by the host-side kernel harnesses: raw arrays in, raw arrays out, exit 2 on failure.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <vector>

template <typename T>
static std::vector<T> read_file(const char* path, size_t count) {
    std::vector<T> data(count);
    FILE* f = std::fopen(path, "rb");
    if (!f || std::fread(data.data(), sizeof(T), count, f) != count) {
        std::fprintf(stderr, "cannot read %zu items from %s\n", count, path);
        std::exit(2);
    }
    std::fclose(f);
    return data;
}

template <typename T>
static void write_file(const char* path, const std::vector<T>& data) {
    FILE* f = std::fopen(path, "wb");
    if (!f || std::fwrite(data.data(), sizeof(T), data.size(), f) != data.size()) {
        std::fprintf(stderr, "cannot write %s\n", path);
        std::exit(2);
    }
    std::fclose(f);
}
