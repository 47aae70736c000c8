// Bundles the upload page (Uppy and our code, its CSS) into dist/web with esbuild, for the server to serve
// itself: no CDN, nothing fetched at run time.
import { copyFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { build } from 'esbuild';

const web = path.resolve(import.meta.dirname, '..', 'web');
const out = path.resolve(import.meta.dirname, '..', 'dist', 'web');

export async function buildUploadPage(outDir = out): Promise<void> {
  await mkdir(outDir, { recursive: true });
  await build({
    entryPoints: { 'hfs-upload': path.join(web, 'upload-page.ts'), 'hfs-upload-style': path.join(web, 'upload-page.css') },
    bundle: true,
    minify: true,
    format: 'esm',
    target: ['es2022'],
    outdir: outDir,
    logLevel: 'warning',
    legalComments: 'external',
  });
  await copyFile(path.join(web, 'index.html'), path.join(outDir, 'index.html'));
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(import.meta.dirname, 'build-web.ts')) await buildUploadPage();
