// Resolve hook registered by resolve-from-console.mjs.
const consoleRoot = new URL("../", import.meta.url).href;
const redirected = /^@(bufbuild\/protobuf|connectrpc\/connect)(\/|$)/;

export async function resolve(specifier, context, nextResolve) {
  if (redirected.test(specifier) && context.parentURL && !context.parentURL.startsWith(consoleRoot)) {
    return nextResolve(specifier, { ...context, parentURL: new URL("package.json", consoleRoot).href });
  }
  return nextResolve(specifier, context);
}
