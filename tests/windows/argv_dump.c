/*
 * argv_dump.exe OUT ARG...: writes each ARG, as Windows handed it to the program
 * (CommandLineToArgvW's split of the command line), to the file OUT as UTF-8, each
 * followed by a NUL byte. Used by tests/windows.rs to see that a `run:` rule starts a
 * Windows program with a hostile caller ID as exactly one argument. Built by
 * scripts/test with MinGW; never shipped.
 */
#include <windows.h>
#include <shellapi.h>
#include <stdio.h>

int main(void)
{
    int count = 0;
    LPWSTR *argv = CommandLineToArgvW(GetCommandLineW(), &count);
    if (argv == NULL || count < 2) {
        return 2;
    }
    FILE *out = _wfopen(argv[1], L"wb");
    if (out == NULL) {
        return 3;
    }
    for (int i = 2; i < count; i++) {
        char text[4096];
        int length = WideCharToMultiByte(CP_UTF8, 0, argv[i], -1, text, sizeof text, NULL, NULL);
        if (length <= 0) {
            return 4;
        }
        /* length counts the terminating NUL, which is the separator */
        fwrite(text, 1, (size_t)length, out);
    }
    fclose(out);
    return 0;
}
