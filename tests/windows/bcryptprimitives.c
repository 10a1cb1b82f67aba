/*
 * bcryptprimitives.dll for Wine 8, for the Windows tests only (never shipped).
 *
 * Rust's standard library (and getrandom) take random bytes from ProcessPrng in
 * bcryptprimitives.dll, which Windows 10 and later have and Debian's Wine 8 lacks, so a
 * Rust program does not start there. This DLL, put beside the exe under test, exports
 * ProcessPrng and fills the buffer from RtlGenRandom (advapi32's SystemFunction036),
 * which Wine has. scripts/test builds it with MinGW.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk)) {
            return FALSE;
        }
        data += chunk;
        length -= chunk;
    }
    /* Like Windows' ProcessPrng, which documents that it always returns TRUE. */
    return TRUE;
}
