<?php
// Theme lookup: the configured theme first, then the default theme.
function acme_template(string $name): string {
    $file = ACME_ROOT . '/themes/' . acme_config('theme', 'default') . '/' . $name . '.php';
    return is_file($file) ? $file : ACME_ROOT . '/themes/default/' . $name . '.php';
}

function acme_render(string $name, array $vars = []): void {
    acme_render_file(acme_template($name), $vars);
}

function acme_render_file(string $file, array $vars = []): void {
    extract($vars);
    $content = $file;
    require acme_template('layout');
}
